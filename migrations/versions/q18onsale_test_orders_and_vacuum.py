"""after an on-sale: test orders found without reading the real ones, and the outbox vacuumed as it churns

The install checklist (Integrations page, View Details) and the worker's read-back sweep look for an organizer's
recent test orders; among tens of thousands of real orders that was a scan. Two partial indexes hold test orders
only. On PostgreSQL every outbox row is updated twice on its way to sent (claimed, then sent), each update leaving a
dead row and index entries behind; autovacuum's default (20 % of the table) lets an on-sale's dead rows pile up for
minutes, and the pages that count the rows still waiting read through them. 1 % keeps them few.

Revision ID: q18onsale
Revises: p17runtally
"""
import sqlalchemy as sa
from alembic import op

revision = 'q18onsale'
down_revision = 'p17runtally'
branch_labels = None
depends_on = None

TEST_ONLY = {"postgresql_where": sa.text("is_test"), "sqlite_where": sa.text("is_test = 1")}


def upgrade():
    op.create_index('ix_orders_test_newest', 'orders', ['organizer_id', 'id'], **TEST_ONLY)
    op.create_index('ix_orders_test_placed', 'orders', ['placed_at'], **TEST_ONLY)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE outbox_events SET (autovacuum_vacuum_scale_factor = 0.01, "
                   "autovacuum_analyze_scale_factor = 0.02)")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE outbox_events RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)")
    op.drop_index('ix_orders_test_placed', table_name='orders')
    op.drop_index('ix_orders_test_newest', table_name='orders')
