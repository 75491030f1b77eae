"""events have a country: phone numbers without a country code are read as that country's

Revision ID: g7country
Revises: f6sessions
"""
import sqlalchemy as sa
from alembic import op

revision = 'g7country'
down_revision = 'f6sessions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('country', sa.String(length=2), nullable=False, server_default='US'))


def downgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('country')
