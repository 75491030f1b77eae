"""View Details stays fast at any outbox size: a tally of each organizer's sent rows, an index of rows with an error,
and a backfill run's progress read from an index of its rows alone

Revision ID: o16pages
Revises: n15orderlimit
"""
import sqlalchemy as sa
from alembic import op

revision = 'o16pages'
down_revision = 'n15orderlimit'
branch_labels = None
depends_on = None


def upgrade():
    # "Accepted by Klaviyo" counted every row the organizer ever sent; outbox.record keeps this tally from now on.
    op.create_table(
        'outbox_tallies',
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('sent', sa.BigInteger(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizers.id'], name='fk_outbox_tallies_organizer_id'),
        sa.PrimaryKeyConstraint('organizer_id', name='pk_outbox_tallies'),
    )
    op.execute("INSERT INTO outbox_tallies (organizer_id, sent) SELECT organizer_id, count(*) FROM outbox_events "
               "WHERE status = 'sent' GROUP BY organizer_id")
    # "Last problem" walked the organizer's rows newest first until one had an error: all of them when none has.
    op.create_index('ix_outbox_org_error', 'outbox_events', ['organizer_id', 'id'], unique=False,
                    sqlite_where=sa.text('last_error IS NOT NULL'), postgresql_where=sa.text('last_error IS NOT NULL'))
    # A run's progress read every row of the run from the table; this index has what it counts, and only rows
    # of a run (the old one also held a NULL entry for every live row).
    op.create_index('ix_outbox_run', 'outbox_events', ['backfill_run_id', 'status', 'order_id', 'profile_key'],
                    unique=False, sqlite_where=sa.text('backfill_run_id IS NOT NULL'),
                    postgresql_where=sa.text('backfill_run_id IS NOT NULL'))
    op.drop_index('ix_outbox_events_backfill_run_id', table_name='outbox_events')


def downgrade():
    op.create_index('ix_outbox_events_backfill_run_id', 'outbox_events', ['backfill_run_id'], unique=False)
    op.drop_index('ix_outbox_run', table_name='outbox_events')
    op.drop_index('ix_outbox_org_error', table_name='outbox_events')
    op.drop_table('outbox_tallies')
