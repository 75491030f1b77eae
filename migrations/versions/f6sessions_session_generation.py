"""organizers carry a session generation, so logout ends every copy of a session

Revision ID: f6sessions
Revises: e5features
"""
import sqlalchemy as sa
from alembic import op

revision = 'f6sessions'
down_revision = 'e5features'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('organizers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), nullable=False, server_default='0'))


def downgrade():
    with op.batch_alter_table('organizers', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
