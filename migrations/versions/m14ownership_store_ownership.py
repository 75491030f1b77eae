"""proof of store ownership: a sales channel is a pending claim until the store's own signed webhook arrives

Stores connected before keep their connection when a webhook verified with their secret or key has already
arrived (any log entry other than a rejected one); the others become claims pending for seven days, which the
store's next webhook proves.

Revision ID: m14ownership
Revises: l13consent
"""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import op

import portal.types

revision = 'm14ownership'
down_revision = 'l13consent'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sales_channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('store_key', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('claim_expires_at', portal.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('proved_at', portal.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('claim_note', sa.Text(), nullable=True))
        batch_op.create_index('ix_sales_channels_store_key', ['store_key'], unique=False)

    channels = sa.table('sales_channels', sa.column('id', sa.Integer), sa.column('status', sa.String),
                        sa.column('active_key', sa.String), sa.column('store_key', sa.String),
                        sa.column('connected_at', portal.types.UTCDateTime()),
                        sa.column('proved_at', portal.types.UTCDateTime()),
                        sa.column('claim_expires_at', portal.types.UTCDateTime()))
    webhooks = sa.table('channel_webhooks', sa.column('channel_id', sa.Integer), sa.column('outcome', sa.String))
    connected = channels.c.status == 'connected'
    op.execute(channels.update().where(connected).values(store_key=channels.c.active_key,
                                                          proved_at=channels.c.connected_at))
    verified = sa.exists().where(webhooks.c.channel_id == channels.c.id, webhooks.c.outcome != 'rejected')
    op.execute(channels.update().where(connected, ~verified).values(
        status='pending', active_key=None, proved_at=None,
        claim_expires_at=datetime.now(timezone.utc) + timedelta(days=7)))


def downgrade():
    bind = op.get_bind()
    channels = sa.table('sales_channels', sa.column('id', sa.Integer), sa.column('status', sa.String),
                        sa.column('active_key', sa.String), sa.column('store_key', sa.String),
                        sa.column('proved_at', portal.types.UTCDateTime()))
    # Before this revision one store had one connected channel: keep the earliest proved, end the rest.
    rows = bind.execute(sa.select(channels.c.id, channels.c.store_key).where(channels.c.status == 'connected')
                        .order_by(channels.c.proved_at, channels.c.id)).all()
    bind.execute(channels.update().values(active_key=None))
    kept = set()
    for channel_id, store_key in rows:
        values = {'active_key': store_key} if store_key not in kept else {'status': 'disconnected'}
        kept.add(store_key)
        bind.execute(channels.update().where(channels.c.id == channel_id).values(**values))
    bind.execute(channels.update().where(channels.c.status == 'pending').values(status='disconnected', active_key=None))
    with op.batch_alter_table('sales_channels', schema=None) as batch_op:
        batch_op.drop_index('ix_sales_channels_store_key')
        batch_op.drop_column('claim_note')
        batch_op.drop_column('proved_at')
        batch_op.drop_column('claim_expires_at')
        batch_op.drop_column('store_key')
