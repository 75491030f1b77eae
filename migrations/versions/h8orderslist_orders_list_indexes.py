"""indexes for the orders list: newest first within an event, by status, test or real, and channel

Revision ID: h8orderslist
Revises: g7country
"""
from alembic import op

revision = 'h8orderslist'
down_revision = 'g7country'
branch_labels = None
depends_on = None


def upgrade():
    # The list pages through one event's orders newest first, optionally filtered: each index ends with the id, so
    # a page is read in order from the index (PostgreSQL does not append the key to an index as SQLite does).
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_event_status')
        batch_op.create_index('ix_orders_event_status', ['event_id', 'status', 'id'], unique=False)
        batch_op.create_index('ix_orders_event_newest', ['event_id', 'id'], unique=False)
        batch_op.create_index('ix_orders_event_test', ['event_id', 'is_test', 'id'], unique=False)
        batch_op.create_index('ix_orders_event_source', ['event_id', 'source', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_event_source')
        batch_op.drop_index('ix_orders_event_test')
        batch_op.drop_index('ix_orders_event_newest')
        batch_op.drop_index('ix_orders_event_status')
        batch_op.create_index('ix_orders_event_status', ['event_id', 'status'], unique=False)
