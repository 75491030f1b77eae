"""marketing consent: versioned wording, each order's consent record, the Klaviyo list settings, and outbox rows
of kind "subscription" (Bulk Subscribe Profiles) beside the events

Revision ID: l13consent
Revises: k12health
"""
import sqlalchemy as sa
from alembic import op

import portal.types

revision = 'l13consent'
down_revision = 'k12health'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='event'))

    op.create_table(
        'consent_wordings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('text', sa.String(length=300), nullable=False),
        sa.Column('created_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('organizer_id', 'channel', 'version'),
    )
    with op.batch_alter_table('consent_wordings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_wordings_organizer_id'), ['organizer_id'], unique=False)

    op.create_table(
        'klaviyo_list_settings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('list_id', sa.String(length=64), nullable=True),
        sa.Column('list_name', sa.String(length=255), nullable=True),
        sa.Column('include_test_orders', sa.Boolean(), nullable=False),
        sa.Column('problem', sa.String(length=20), nullable=True),
        sa.Column('problem_detail', sa.Text(), nullable=True),
        sa.Column('problem_at', portal.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('updated_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('organizer_id'),
    )

    op.create_table(
        'order_consents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('email_marketing', sa.Boolean(), nullable=False),
        sa.Column('sms_marketing', sa.Boolean(), nullable=False),
        sa.Column('sms_phone', sa.String(length=40), nullable=True),
        sa.Column('email_version', sa.Integer(), nullable=True),
        sa.Column('email_text', sa.Text(), nullable=True),
        sa.Column('sms_version', sa.Integer(), nullable=True),
        sa.Column('sms_text', sa.Text(), nullable=True),
        sa.Column('consented_at', portal.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('language', sa.String(length=35), nullable=True),
        sa.Column('source_detail', sa.String(length=300), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('order_id'),
    )
    with op.batch_alter_table('order_consents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_consents_organizer_id'), ['organizer_id'], unique=False)


def downgrade():
    with op.batch_alter_table('order_consents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_consents_organizer_id'))
    op.drop_table('order_consents')
    op.drop_table('klaviyo_list_settings')
    with op.batch_alter_table('consent_wordings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_wordings_organizer_id'))
    op.drop_table('consent_wordings')
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.drop_column('kind')
