"""an order's whole life: order and ticket status, refunds, transfers, event changes

Revision ID: d4lifecycle
Revises: c3outboxsent
"""
import sqlalchemy as sa
from alembic import op

import portal.types

revision = 'd4lifecycle'
down_revision = 'c3outboxsent'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='paid'))
        batch_op.add_column(sa.Column('refunded_total', portal.types.Money(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('cancelled_at', portal.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('cancelled_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('cancel_reason', sa.Text(), nullable=True))
        batch_op.create_index('ix_orders_event_status', ['event_id', 'status'], unique=False)
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=12), nullable=False, server_default='valid'))
        batch_op.add_column(sa.Column('refunded_amount', portal.types.Money(), nullable=False, server_default='0'))
    op.create_table('refunds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('amount', portal.types.Money(), nullable=False),
        sa.Column('fees_included', sa.Boolean(), nullable=False),
        sa.Column('is_full', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('request_key', sa.String(length=64), nullable=True),
        sa.Column('external_ref', sa.String(length=120), nullable=True),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name='fk_refunds_order_id'),
        sa.PrimaryKeyConstraint('id', name='pk_refunds'),
        sa.UniqueConstraint('order_id', 'request_key', name='uq_refunds_order_request'),
        sa.UniqueConstraint('order_id', 'external_ref', name='uq_refunds_order_external'),
    )
    op.create_index('ix_refunds_order_id', 'refunds', ['order_id'], unique=False)
    op.create_table('refund_lines',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('refund_id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.String(length=36), nullable=False),
        sa.Column('amount', portal.types.Money(), nullable=False),
        sa.ForeignKeyConstraint(['refund_id'], ['refunds.id'], name='fk_refund_lines_refund_id'),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name='fk_refund_lines_ticket_id'),
        sa.PrimaryKeyConstraint('id', name='pk_refund_lines'),
    )
    op.create_index('ix_refund_lines_refund_id', 'refund_lines', ['refund_id'], unique=False)
    op.create_index('ix_refund_lines_ticket_id', 'refund_lines', ['ticket_id'], unique=False)
    op.create_table('transfers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.String(length=36), nullable=False),
        sa.Column('from_attendee_id', sa.Integer(), nullable=False),
        sa.Column('from_name', sa.String(length=201), nullable=False),
        sa.Column('from_email', sa.String(length=254), nullable=True),
        sa.Column('to_attendee_id', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name='fk_transfers_order_id'),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name='fk_transfers_ticket_id'),
        sa.PrimaryKeyConstraint('id', name='pk_transfers'),
    )
    op.create_index('ix_transfers_order_id', 'transfers', ['order_id'], unique=False)
    op.create_index('ix_transfers_ticket_id', 'transfers', ['ticket_id'], unique=False)
    op.create_table('event_changes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('old_starts_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('new_starts_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('old_ends_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('new_ends_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('old_venue', sa.String(length=200), nullable=False),
        sa.Column('new_venue', sa.String(length=200), nullable=False),
        sa.Column('changed_by', sa.String(length=200), nullable=False),
        sa.Column('changed_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('people_told', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['event_id'], ['events.id'], name='fk_event_changes_event_id'),
        sa.PrimaryKeyConstraint('id', name='pk_event_changes'),
    )
    op.create_index('ix_event_changes_event_id', 'event_changes', ['event_id'], unique=False)


def downgrade():
    op.drop_index('ix_event_changes_event_id', table_name='event_changes')
    op.drop_table('event_changes')
    op.drop_index('ix_transfers_ticket_id', table_name='transfers')
    op.drop_index('ix_transfers_order_id', table_name='transfers')
    op.drop_table('transfers')
    op.drop_index('ix_refund_lines_ticket_id', table_name='refund_lines')
    op.drop_index('ix_refund_lines_refund_id', table_name='refund_lines')
    op.drop_table('refund_lines')
    op.drop_index('ix_refunds_order_id', table_name='refunds')
    op.drop_table('refunds')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('refunded_amount')
        batch_op.drop_column('status')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_event_status')
        batch_op.drop_column('cancel_reason')
        batch_op.drop_column('cancelled_by')
        batch_op.drop_column('cancelled_at')
        batch_op.drop_column('refunded_total')
        batch_op.drop_column('status')
