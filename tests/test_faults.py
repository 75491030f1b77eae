"""The fault matrix: each fault injected for real (sandbox faults, a real Redis, real worker processes),
after which the sandbox received exactly the expected events: none missing, none sent twice (the sandbox drops
repeats as Klaviyo does, and counts them, so a repeat the product sent fails the test)."""
import time

import pytest
import requests
from sqlalchemy import func, select

from portal.extensions import db
from portal.klaviyo.payloads import build_order_events
from portal.orders.service import AttendeeInput, OrderInput, place_order, snapshot
from portal.sync.models import OutboxEvent
from tests.conftest import RedisServer, oauth_connect, sandbox_events, sandbox_received, sync_settled, wait_for

pytestmark = pytest.mark.slow


def place_orders(app, event_id, count, guest=True):
    """Orders through the product's own order path; each makes 3 events (2 with guest=False)."""
    from portal.events.models import Event

    expected = set()
    with app.app_context():
        event = db.session.get(Event, event_id)
        ticket_type = event.ticket_types[0]
        for i in range(count):
            attendee = (AttendeeInput("Guest", str(i), f"guest{i}@guests.example") if guest
                        else AttendeeInput("Buyer", str(i), f"buyer{i}@buyers.example"))
            order = place_order(event, OrderInput(first_name="Buyer", last_name=str(i),
                                                  email=f"buyer{i}@buyers.example", phone=None,
                                                  lines=[(ticket_type, attendee)]))
            expected |= {e.unique_id for e in build_order_events(snapshot(order)).events}
    return expected


def accepted_ids(sandbox_url, may_repeat=frozenset()):
    """The unique_ids the sandbox received, after checking that none was sent twice (those in `may_repeat`:
    at most twice)."""
    received = sandbox_received(sandbox_url)
    repeats = {uid: n for uid, n in received.items() if n > (2 if uid in may_repeat else 1)}
    assert not repeats, f"a unique_id was sent more than once: {repeats}"
    return set(received)


def all_arrive(sandbox_url, expected, timeout=40, may_repeat=frozenset()):
    wait_for(lambda: accepted_ids(sandbox_url, may_repeat) >= expected, timeout=timeout,
             message=f"{len(expected)} events to reach the sandbox")
    assert accepted_ids(sandbox_url, may_repeat) == expected


def all_sent(app, sandbox_url, expected, timeout=10, may_repeat=frozenset()):
    """Every row marked sent and nothing left to send; then the sandbox received each event exactly once (those
    in `may_repeat`, resent after a crash as unique_id allows: once or twice)."""
    wait_for(lambda: outbox_counts(app) == {"sent": len(expected)}, timeout=timeout, message="every row marked sent")
    wait_for(lambda: sync_settled(app), timeout=timeout, message="no job queued or running")
    received = sandbox_received(sandbox_url)
    assert set(received) == expected
    assert {uid: n for uid, n in received.items() if uid not in may_repeat} == dict.fromkeys(expected - may_repeat, 1)
    assert all(received[uid] in (1, 2) for uid in may_repeat & expected), received


def wait_for_sweeps(app, count=2, timeout=20):
    """Wait until every worker has swept the outbox `count` more times. A worker heartbeats, then sweeps, then
    waits for a job: a second heartbeat after this call means one whole sweep ran after it."""
    from rq import Worker

    from portal.sync.queue import redis_connection

    with app.app_context():
        connection = redis_connection()
        last = {w.name: w.last_heartbeat for w in Worker.all(connection=connection)}
        beats = dict.fromkeys(last, 0)
        assert beats, "no worker is running"

        def swept():
            for worker in Worker.all(connection=connection):
                if worker.name in last and worker.last_heartbeat != last[worker.name]:
                    last[worker.name] = worker.last_heartbeat
                    beats[worker.name] += 1
            return min(beats.values()) > count

        wait_for(swept, timeout=timeout, message=f"{count} sweeps by every worker")


def outbox_counts(app) -> dict:
    with app.app_context():
        return dict(db.session.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)).all())


def faults(sandbox_url, *rules, seed=7):
    response = requests.post(f"{sandbox_url}/_sandbox/faults", json={"seed": seed, "rules": list(rules)}, timeout=5)
    assert response.status_code == 201, response.text


def request_log(sandbox_url, since=0.0, prefix="/api/"):
    response = requests.get(f"{sandbox_url}/_sandbox/requests", params={"since": since, "path_prefix": prefix},
                            timeout=5)
    return response.json()["requests"]


@pytest.fixture(autouse=True)
def _no_faults(sandbox):
    yield
    requests.delete(f"{sandbox.url}/_sandbox/faults", timeout=5)
    requests.post(f"{sandbox.url}/_sandbox/config", json={"access_token_lifetime": 3600, "enforce_rate_limits": True},
                  timeout=5)


def test_429_storm_waits_for_retry_after(app, connected, make_event, sandbox, start_worker):
    """1. Klaviyo answers 429 with Retry-After: nobody calls again before it has passed."""
    expected = place_orders(app, make_event(connected), 3)
    faults(sandbox.url, {"status": 429, "retry_after": 1, "count": 4})
    start_worker(SYNC_SINGLE_THRESHOLD=100)
    all_arrive(sandbox.url, expected)
    log = request_log(sandbox.url)
    throttled = [entry for entry in log if entry["status"] == 429]
    assert len(throttled) == 4
    for entry in throttled:
        later = [e["ts"] for e in log if e["ts"] > entry["ts"]]
        assert min(later) - entry["ts"] >= 1.0, "a request went out before Retry-After had passed"
    all_sent(app, sandbox.url, expected)


def test_server_errors_and_dropped_connections(app, connected, make_event, sandbox, start_worker):
    """2. 500, 503 and dropped connections on a share of requests: retried with backoff, nothing lost."""
    expected = place_orders(app, make_event(connected), 12)
    faults(sandbox.url, {"status": 500, "probability": 0.25}, {"status": 503, "probability": 0.25},
           {"status": "drop", "probability": 0.25})
    start_worker(SYNC_SINGLE_THRESHOLD=100)
    wait_for(lambda: requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()["faults_injected"] >= 6,
             message="faults to fire")
    requests.delete(f"{sandbox.url}/_sandbox/faults", timeout=5)
    all_arrive(sandbox.url, expected, timeout=60)
    all_sent(app, sandbox.url, expected)


def test_worker_killed_mid_batch_then_restarted(app, connected, make_event, sandbox, start_worker):
    """3. kill -9 of the worker while it sends; the lease expires, a new worker finishes, no duplicates."""
    expected = place_orders(app, make_event(connected), 10)
    faults(sandbox.url, {"latency_ms": 150})
    worker = start_worker(SYNC_SINGLE_THRESHOLD=100, OUTBOX_LEASE_SECONDS=3)
    wait_for(lambda: len(sandbox_events(sandbox.url)) >= 3, message="the first events")
    worker.kill()
    with app.app_context():
        # Of the rows the dead worker held, the one in flight may have reached Klaviyo unrecorded: it is sent
        # again, and only it may be (Klaviyo drops the repeat by its unique_id).
        in_flight = set(db.session.scalars(select(OutboxEvent.unique_id).where(OutboxEvent.status == "claimed")))
    assert in_flight, "the killed worker left no claimed rows behind"
    arrived = accepted_ids(sandbox.url)
    assert arrived < expected, "the worker finished before it was killed"
    requests.delete(f"{sandbox.url}/_sandbox/faults", timeout=5)
    start_worker(OUTBOX_LEASE_SECONDS=3)
    all_arrive(sandbox.url, expected, may_repeat=in_flight)
    all_sent(app, sandbox.url, expected, may_repeat=in_flight)
    assert sum(sandbox_received(sandbox.url).values()) - len(expected) <= 1, "more than the one in-flight event resent"


def test_redis_down_during_purchases(app, connected, make_event, sandbox, start_worker, tmp_path):
    """4. A Redis of the test's own is stopped while purchases happen; they succeed; all sync after."""
    own = RedisServer(tmp_path)
    own.start()
    try:
        app.config["REDIS_URL"] = own.url
        app.extensions.pop("redis", None)
        start_worker(redis_url=own.url)
        event_id = make_event(connected)
        expected = place_orders(app, event_id, 2)
        wait_for(lambda: accepted_ids(sandbox.url) >= expected, message="events before the outage")
        own.stop()
        started = time.time()
        expected |= place_orders(app, event_id, 3)  # purchases go through with Redis down
        assert time.time() - started < 15
        counts = outbox_counts(app)
        assert counts.get("pending") == 9
        own.start()
        all_arrive(sandbox.url, expected, timeout=40)
        all_sent(app, sandbox.url, expected)
    finally:
        own.stop()


def test_access_token_expiring_mid_run(app, client, organizer, make_event, sandbox, start_worker):
    """5. Short-lived access tokens expire mid-run: 401, refresh once, retry; nothing lost."""
    requests.post(f"{sandbox.url}/_sandbox/config", json={"access_token_lifetime": 1}, timeout=5)
    assert oauth_connect(client, sandbox.url).status_code == 303
    event_id = make_event(organizer)
    time.sleep(1.1)
    with app.app_context():
        # Our clock says the token is good for an hour; Klaviyo's says it has expired (clock skew, early
        # expiry): the first send gets a 401, refreshes once and retries.
        from datetime import timedelta

        from portal.sync.connection import connection_for
        from portal.types import utcnow

        connection_for(organizer).expires_at = utcnow() + timedelta(hours=1)
        db.session.commit()
    start_worker(KLAVIYO_REFRESH_MARGIN_SECONDS=0)
    expected = set()
    for _ in range(3):
        expected |= place_orders(app, event_id, 2)
        time.sleep(1.2)
    all_arrive(sandbox.url, expected)
    stats = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()
    assert stats["refreshes"] >= 1
    assert any(entry["status"] == 401 for entry in request_log(sandbox.url))
    all_sent(app, sandbox.url, expected)


def test_revoked_in_klaviyo_holds_events_until_reconnect(app, client, connected, make_event, sandbox, start_worker):
    """6. The app is uninstalled in Klaviyo: Needs reconnect, events held (not retried), all arrive after
    Reconnect, with their original time."""
    from portal.sync.connection import connection_for

    event_id = make_event(connected)
    worker = start_worker()
    requests.post(f"{sandbox.url}/_sandbox/uninstall", json={}, timeout=5).raise_for_status()
    expected = place_orders(app, event_id, 3)

    def held():
        with app.app_context():
            connection = connection_for(connected)
            return connection.status == "needs_reconnect" and outbox_counts(app).get("held") == len(expected)

    wait_for(held, message="the connection to need reconnecting and the events to be held")
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Needs reconnect" in page and "Reconnect" in page
    with app.app_context():
        attempts = db.session.scalar(select(func.sum(OutboxEvent.attempts)))
    wait_for_sweeps(app, 2)  # held events are not attempted
    with app.app_context():
        assert db.session.scalar(select(func.sum(OutboxEvent.attempts))) == attempts
    assert outbox_counts(app) == {"held": len(expected)}
    assert accepted_ids(sandbox.url) == set()

    assert oauth_connect(client, sandbox.url).status_code == 303
    all_arrive(sandbox.url, expected)
    all_sent(app, sandbox.url, expected)
    with app.app_context():
        from portal.orders.models import Order
        placed = {f"order_{o.id}": o.placed_at for o in db.session.scalars(select(Order))}
    for event in sandbox_events(sandbox.url, "Placed Order"):
        assert event["time"].replace("+00:00", "Z").startswith(placed[event["unique_id"]].strftime("%Y-%m-%dT%H:%M:%S"))
    assert worker.proc.poll() is None


def test_disconnect_during_backlog_is_a_hard_stop(app, client, connected, make_event, sandbox, start_worker):
    """7. Disconnect with 200 events queued: once Disconnect has returned, zero requests reach Klaviyo."""
    expected = place_orders(app, make_event(connected), 67)  # 201 events
    assert len(expected) == 201
    faults(sandbox.url, {"latency_ms": 20})
    start_worker(SYNC_SINGLE_THRESHOLD=1000)
    wait_for(lambda: len(sandbox_events(sandbox.url)) >= 10, message="sending to be under way")
    response = client.post_form("/manage/integrations/klaviyo/disconnect")
    returned = time.time()
    assert response.status_code == 303
    wait_for(lambda: sync_settled(app), message="no job queued or running")
    wait_for_sweeps(app, 1)  # a sweep after the disconnect finds nothing to send either
    after = [e for e in request_log(sandbox.url, since=returned) if e["path"].startswith("/api/")]
    assert after == []
    counts = outbox_counts(app)
    assert set(counts) <= {"sent", "cancelled"} and counts.get("cancelled", 0) > 0
    with app.app_context():
        sent = set(db.session.scalars(select(OutboxEvent.unique_id).where(OutboxEvent.status == "sent")))
    assert sandbox_received(sandbox.url) == dict.fromkeys(sent, 1)


def test_four_workers_share_one_rate_limit(app, connected, make_event, sandbox, start_worker):
    """8. Four workers drain one installation's backlog against Klaviyo's real limits: no 429 storm."""
    expected = place_orders(app, make_event(connected, capacity=1000), 300)  # 900 events
    for _ in range(4):
        start_worker(SYNC_BATCH_LIMIT=20, SYNC_SINGLE_THRESHOLD=0)
    all_arrive(sandbox.url, expected, timeout=90)
    log = request_log(sandbox.url)
    bulk = [e for e in log if e["path"] == "/api/event-bulk-create-jobs"]
    stats = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()
    assert len(bulk) >= 45, (len(log), stats["requests"])
    assert sum(1 for e in log if e["status"] == 429) <= 2
    all_sent(app, sandbox.url, expected)
