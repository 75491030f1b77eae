"""the organizer can limit orders per e-mail address for an event

Revision ID: n15orderlimit
Revises: m14ownership
"""
import sqlalchemy as sa
from alembic import op

revision = 'n15orderlimit'
down_revision = 'm14ownership'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_orders_per_email', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('max_orders_per_email')
