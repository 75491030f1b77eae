"""Klaviyo health: event checks (read back from Klaviyo), incidents and their alert mails, the double-send guard,
started checkouts (Started Checkout) and the organizer's switch for them

Revision ID: k12health
Revises: i9flowsetup
"""
import sqlalchemy as sa
from alembic import op

import portal.types

revision = 'k12health'
down_revision = 'i9flowsetup'
branch_labels = None
depends_on = None

UTC = portal.types.UTCDateTime(timezone=True)


def upgrade():
    op.create_table(
        'klaviyo_event_checks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('outbox_id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('profile_id', sa.String(length=64), nullable=True),
        sa.Column('klaviyo_event_id', sa.String(length=64), nullable=True),
        sa.Column('metric_id', sa.String(length=64), nullable=True),
        sa.Column('looks', sa.Integer(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('last_look_at', UTC, nullable=True),
        sa.Column('next_look_at', UTC, nullable=False),
        sa.Column('give_up_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.ForeignKeyConstraint(['outbox_id'], ['outbox_events.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('outbox_id'),
    )
    with op.batch_alter_table('klaviyo_event_checks', schema=None) as batch_op:
        batch_op.create_index('ix_event_checks_due', ['state', 'next_look_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_klaviyo_event_checks_organizer_id'), ['organizer_id'], unique=False)

    op.create_table(
        'klaviyo_incidents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('open_for', sa.Integer(), nullable=True),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('opened_at', UTC, nullable=False),
        sa.Column('resolved_at', UTC, nullable=True),
        sa.Column('resolution', sa.Text(), nullable=True),
        sa.Column('held_most', sa.Integer(), nullable=False),
        sa.Column('failed_most', sa.Integer(), nullable=False),
        sa.Column('mail_to', sa.String(length=254), nullable=True),
        sa.Column('opened_mail', sa.String(length=10), nullable=False),
        sa.Column('opened_mail_at', UTC, nullable=True),
        sa.Column('resolved_mail', sa.String(length=10), nullable=True),
        sa.Column('resolved_mail_at', UTC, nullable=True),
        sa.Column('mail_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('open_for', name='uq_incidents_open_for'),
    )
    with op.batch_alter_table('klaviyo_incidents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_klaviyo_incidents_organizer_id'), ['organizer_id'], unique=False)

    op.create_table(
        'klaviyo_metric_guards',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('others', sa.Text(), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('requested_at', UTC, nullable=False),
        sa.Column('checked_at', UTC, nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('organizer_id'),
    )

    op.create_table(
        'checkout_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token', sa.String(length=64), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('layout', sa.String(length=8), nullable=False),
        sa.Column('is_test', sa.Boolean(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('first_name', sa.String(length=100), nullable=False),
        sa.Column('last_name', sa.String(length=100), nullable=False),
        sa.Column('selection', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('started_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=True),
        sa.Column('sent_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['event_id'], ['events.id'], ),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token'),
    )
    with op.batch_alter_table('checkout_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_checkout_sessions_due', ['status', 'started_at'], unique=False)
        batch_op.create_index('ix_checkout_sessions_buyer', ['event_id', 'email', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_checkout_sessions_organizer_id'), ['organizer_id'], unique=False)

    op.create_table(
        'klaviyo_options',
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('started_checkout', sa.Boolean(), nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], ),
        sa.PrimaryKeyConstraint('organizer_id'),
    )


def downgrade():
    op.drop_table('klaviyo_options')
    with op.batch_alter_table('checkout_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkout_sessions_organizer_id'))
        batch_op.drop_index('ix_checkout_sessions_buyer')
        batch_op.drop_index('ix_checkout_sessions_due')
    op.drop_table('checkout_sessions')
    op.drop_table('klaviyo_metric_guards')
    with op.batch_alter_table('klaviyo_incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_klaviyo_incidents_organizer_id'))
    op.drop_table('klaviyo_incidents')
    with op.batch_alter_table('klaviyo_event_checks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_klaviyo_event_checks_organizer_id'))
        batch_op.drop_index('ix_event_checks_due')
    op.drop_table('klaviyo_event_checks')
