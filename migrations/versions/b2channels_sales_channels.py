"""sales channels: Shopify and Wix stores, their product mappings, their webhook log, and orders.external_ref

Revision ID: b2channels
Revises: a1backfill
Create Date: 2026-11-21 23:31:42.801146

"""
from alembic import op
import sqlalchemy as sa

import portal.types


# revision identifiers, used by Alembic.
revision = 'b2channels'
down_revision = 'a1backfill'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sales_channels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organizer_id', sa.Integer(), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('account', sa.String(length=255), nullable=False),
    sa.Column('active_key', sa.String(length=300), nullable=True),
    sa.Column('secret_enc', sa.Text(), nullable=True),
    sa.Column('connected_at', portal.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('disconnected_at', portal.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_webhook_at', portal.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], name='fk_sales_channels_organizer_id'),
    sa.PrimaryKeyConstraint('id', name='pk_sales_channels'),
    sa.UniqueConstraint('active_key', name='uq_sales_channels_active_key'),
    sa.UniqueConstraint('organizer_id', 'platform', name='uq_sales_channels_organizer_platform')
    )
    op.create_table('channel_mappings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=False),
    sa.Column('ticket_type_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.String(length=64), nullable=True),
    sa.Column('variant_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['channel_id'], ['sales_channels.id'], name='fk_channel_mappings_channel_id',
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['ticket_type_id'], ['ticket_types.id'], name='fk_channel_mappings_ticket_type_id',
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name='pk_channel_mappings'),
    sa.UniqueConstraint('channel_id', 'ticket_type_id', name='uq_channel_mappings_ticket_type')
    )
    op.create_index('ix_channel_mappings_lookup', 'channel_mappings', ['channel_id', 'product_id', 'variant_id'],
                    unique=False)

    op.create_table('channel_webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=False),
    sa.Column('received_at', portal.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('topic', sa.String(length=120), nullable=False),
    sa.Column('webhook_id', sa.String(length=200), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.Column('external_order_id', sa.String(length=64), nullable=True),
    sa.Column('external_order_name', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.Text(), nullable=True),
    sa.Column('skipped', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['channel_id'], ['sales_channels.id'], name='fk_channel_webhooks_channel_id',
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name='fk_channel_webhooks_order_id'),
    sa.PrimaryKeyConstraint('id', name='pk_channel_webhooks'),
    sa.UniqueConstraint('channel_id', 'webhook_id', name='uq_channel_webhooks_webhook_id')
    )
    op.create_index('ix_channel_webhooks_channel_received', 'channel_webhooks', ['channel_id', 'received_at'],
                    unique=False)
    op.create_index('ix_channel_webhooks_external_order', 'channel_webhooks', ['channel_id', 'external_order_id'],
                    unique=False)

    # Adding a nullable column needs no table rebuild, even on SQLite.
    op.add_column('orders', sa.Column('external_ref', sa.String(length=120), nullable=True))
    op.create_index('ix_orders_external_ref', 'orders', ['external_ref'], unique=False)


def downgrade():
    op.drop_index('ix_channel_webhooks_external_order', table_name='channel_webhooks')
    op.drop_index('ix_channel_webhooks_channel_received', table_name='channel_webhooks')
    op.drop_table('channel_webhooks')
    op.drop_index('ix_channel_mappings_lookup', table_name='channel_mappings')
    op.drop_table('channel_mappings')
    op.drop_table('sales_channels')

    op.drop_index('ix_orders_external_ref', table_name='orders')
    # SQLite before 3.35 cannot drop a column in place; batch mode rebuilds the table there.
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('external_ref')
