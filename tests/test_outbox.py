"""Claiming outbox rows: exactly the number asked for, and never the same row twice, on either database."""
import threading

from sqlalchemy import func, select

from portal.extensions import db
from portal.sync.models import CLAIMED, PENDING, OutboxEvent
from portal.sync.outbox import claim, reclaim_expired, release
from portal.types import utcnow


def add_pending(app, organizer_id, count):
    with app.app_context():
        db.session.add_all(OutboxEvent(organizer_id=organizer_id, metric="Placed Order", unique_id=f"order_{i}",
                                       profile_key="p@x.example", payload="{}", status=PENDING)
                           for i in range(count))
        db.session.commit()


def test_claim_takes_exactly_the_limit(app, make_organizer):
    organizer_id = make_organizer()
    add_pending(app, organizer_id, 100)
    with app.app_context():
        rows = claim(organizer_id, 20, 60)
        assert len(rows) == 20
        assert db.session.scalar(select(func.count()).where(OutboxEvent.status == CLAIMED)) == 20


def test_concurrent_claims_never_share_a_row(app, make_organizer):
    organizer_id = make_organizer()
    add_pending(app, organizer_id, 300)
    taken: list[list[int]] = []
    sizes: list[int] = []
    barrier = threading.Barrier(3)

    def worker():
        with app.app_context():
            barrier.wait()
            mine = []
            while batch := claim(organizer_id, 25, 60):
                sizes.append(len(batch))
                mine.extend(row.id for row in batch)
            taken.append(mine)
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [row_id for mine in taken for row_id in mine]
    assert len(every) == 300 and len(set(every)) == 300
    assert max(sizes) <= 25


def test_release_and_reclaim(app, make_organizer):
    from datetime import timedelta

    organizer_id = make_organizer()
    add_pending(app, organizer_id, 4)
    with app.app_context():
        rows = claim(organizer_id, 4, 60)
        release(rows[:2], wait_seconds=0)
        assert db.session.scalar(select(func.count()).where(OutboxEvent.status == PENDING)) == 2
        db.session.execute(OutboxEvent.__table__.update().values(claimed_until=utcnow() - timedelta(seconds=1))
                           .where(OutboxEvent.status == CLAIMED))
        db.session.commit()
        assert reclaim_expired() == [organizer_id]
        assert db.session.scalar(select(func.count()).where(OutboxEvent.status == PENDING)) == 4
