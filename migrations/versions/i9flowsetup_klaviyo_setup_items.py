"""the flows and segments the portal made in an organizer's Klaviyo ("Set up flows and segments")

Revision ID: i9flowsetup
Revises: h8orderslist
"""
import sqlalchemy as sa
from alembic import op

import portal.types

revision = 'i9flowsetup'
down_revision = 'h8orderslist'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'klaviyo_setup_items',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=80), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('options_json', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('klaviyo_id', sa.String(length=64), nullable=True),
        sa.Column('account_id', sa.String(length=64), nullable=True),
        sa.Column('found_existing', sa.Boolean(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('requested_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('done_at', portal.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('organizer_id', 'key'),
    )
    with op.batch_alter_table('klaviyo_setup_items', schema=None) as batch_op:
        batch_op.create_index('ix_setup_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_klaviyo_setup_items_organizer_id'), ['organizer_id'], unique=False)


def downgrade():
    with op.batch_alter_table('klaviyo_setup_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_klaviyo_setup_items_organizer_id'))
        batch_op.drop_index('ix_setup_due')
    op.drop_table('klaviyo_setup_items')
