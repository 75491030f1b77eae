"""outbox index covers sent_at, for the queue figures in View Details

Revision ID: c3outboxsent
Revises: b2channels
"""
from alembic import op

revision = 'c3outboxsent'
down_revision = 'b2channels'
branch_labels = None
depends_on = None


def upgrade():
    # "Sent in the last minute" was a scan of every row the organizer ever sent.
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_org_status')
        batch_op.create_index('ix_outbox_org_status', ['organizer_id', 'status', 'sent_at'], unique=False)


def downgrade():
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_org_status')
        batch_op.create_index('ix_outbox_org_status', ['organizer_id', 'status'], unique=False)
