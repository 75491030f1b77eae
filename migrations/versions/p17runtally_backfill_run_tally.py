"""a backfill run's progress costs the same at any size: a tally of what its rows became (sent, sent to addresses
Klaviyo drops, failed, orders with one sent), kept as they change status, and the orders it queued something for

Revision ID: p17runtally
Revises: o16pages
"""
import sqlalchemy as sa
from alembic import op

revision = 'p17runtally'
down_revision = 'o16pages'
branch_labels = None
depends_on = None

# portal.contact.KLAVIYO_DROPPED_DOMAINS when this was written (a migration does not import the app).
DROPPED = " OR ".join(f"profile_key LIKE '%@{domain}'" for domain in
                      ("example.com", "example.org", "example.net", "test.com"))


def upgrade():
    op.create_table(
        'backfill_tallies',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('sent', sa.Integer(), server_default='0', nullable=False),
        sa.Column('sent_dropped', sa.Integer(), server_default='0', nullable=False),
        sa.Column('failed', sa.Integer(), server_default='0', nullable=False),
        sa.Column('orders_sent', sa.Integer(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['backfill_runs.id'], name='fk_backfill_tallies_run_id'),
        sa.PrimaryKeyConstraint('run_id', name='pk_backfill_tallies'),
    )
    with op.batch_alter_table('backfill_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('orders_queued', sa.Integer(), server_default='0', nullable=False))
    # What progress() counted from the run's rows on every request, counted once (every run gets its row).
    op.execute(
        "INSERT INTO backfill_tallies (run_id, sent, sent_dropped, failed, orders_sent) "
        "SELECT r.id, "
        "(SELECT count(*) FROM outbox_events WHERE backfill_run_id = r.id AND status = 'sent'), "
        f"(SELECT count(*) FROM outbox_events WHERE backfill_run_id = r.id AND status = 'sent' AND ({DROPPED})), "
        "(SELECT count(*) FROM outbox_events WHERE backfill_run_id = r.id AND status = 'failed'), "
        "(SELECT count(DISTINCT order_id) FROM outbox_events WHERE backfill_run_id = r.id AND status = 'sent') "
        "FROM backfill_runs r")
    op.execute("UPDATE backfill_runs SET orders_queued = (SELECT count(DISTINCT order_id) FROM outbox_events "
               "WHERE outbox_events.backfill_run_id = backfill_runs.id)")


def downgrade():
    with op.batch_alter_table('backfill_runs', schema=None) as batch_op:
        batch_op.drop_column('orders_queued')
    op.drop_table('backfill_tallies')
