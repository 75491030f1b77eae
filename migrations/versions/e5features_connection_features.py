"""the Klaviyo connection remembers the features that need more scopes (incremental authorization)

Revision ID: e5features
Revises: d4lifecycle
"""
import sqlalchemy as sa
from alembic import op

revision = 'e5features'
down_revision = 'd4lifecycle'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('klaviyo_connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('features', sa.String(length=200), nullable=False, server_default=''))


def downgrade():
    with op.batch_alter_table('klaviyo_connections', schema=None) as batch_op:
        batch_op.drop_column('features')
