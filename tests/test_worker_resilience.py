"""Workers that outlive Redis, and quick recovery: real `worker.py` processes, a redis-server of the test's own
that is stopped and started again, and the Klaviyo sandbox counting every event it RECEIVED (repeats that it
dropped by unique_id included), so a resend by the product fails the test.

Times are only bounded from below, or by a wait with a generous timeout: the machine is shared and loaded.
"""
import time

import pytest
import requests
from sqlalchemy import func, select

from portal.extensions import db
from portal.klaviyo.payloads import build_order_events
from portal.orders.service import AttendeeInput, OrderInput, place_order, snapshot
from portal.sync.models import CLAIMED, OutboxEvent
from tests.conftest import RedisServer, sandbox_received, sync_settled, wait_for

pytestmark = pytest.mark.slow
SEND_PATHS = ("/api/events", "/api/event-bulk-create-jobs")  # the 429 is Create Event's; others have their own


def place_orders(app, event_id, count):
    """Orders through the product's own order path, 3 events each; returns their unique_ids."""
    from portal.events.models import Event

    expected = set()
    with app.app_context():
        event = db.session.get(Event, event_id)
        ticket_type = event.ticket_types[0]
        for i in range(count):
            order = place_order(event, OrderInput(
                first_name="Buyer", last_name=str(i), email=f"buyer{i}@buyers.example", phone=None,
                lines=[(ticket_type, AttendeeInput("Guest", str(i), f"guest{i}@guests.example"))]))
            expected |= {e.unique_id for e in build_order_events(snapshot(order)).events}
    return expected


def faults(sandbox_url, *rules):
    response = requests.post(f"{sandbox_url}/_sandbox/faults", json={"seed": 7, "rules": list(rules)}, timeout=5)
    assert response.status_code == 201, response.text


def sandbox_stats(sandbox_url) -> dict:
    return requests.get(f"{sandbox_url}/_sandbox/stats", timeout=5).json()


def api_requests(sandbox_url) -> list[dict]:
    response = requests.get(f"{sandbox_url}/_sandbox/requests", params={"path_prefix": "/api/"}, timeout=5)
    return response.json()["requests"]


def statuses(app) -> dict:
    with app.app_context():
        return dict(db.session.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)).all())


def claimed_ids(app) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(select(OutboxEvent.unique_id).where(OutboxEvent.status == CLAIMED)))


def all_sent_once(app, sandbox_url, expected, timeout=40):
    """Every event reached the sandbox exactly once (not one repeat), and every row says sent."""
    wait_for(lambda: set(sandbox_received(sandbox_url)) >= expected, timeout=timeout,
             message=f"{len(expected)} events to reach the sandbox")
    wait_for(lambda: statuses(app) == {"sent": len(expected)}, timeout=timeout, message="every row marked sent")
    assert sandbox_received(sandbox_url) == dict.fromkeys(expected, 1)


@pytest.fixture
def own_redis(app, tmp_path):
    """A redis-server that only this test uses, so that it can stop and start it; the app uses it too."""
    server = RedisServer(tmp_path / "redis").start()
    app.config["REDIS_URL"] = server.url
    app.extensions.pop("redis", None)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_faults(sandbox):
    yield
    requests.delete(f"{sandbox.url}/_sandbox/faults", timeout=5)


def test_worker_rides_out_a_redis_restart_under_a_backlog(app, connected, make_event, sandbox, start_worker,
                                                          own_redis):
    """redis-server restarted (nothing persisted) while a backlog is being sent: the worker keeps running,
    and every event arrives exactly once."""
    expected = place_orders(app, make_event(connected), 20)  # 60 events
    faults(sandbox.url, {"latency_ms": 40})  # single sends of ~40 ms: Redis most likely dies mid-request
    worker = start_worker(redis_url=own_redis.url, SYNC_SINGLE_THRESHOLD=1000)
    wait_for(lambda: len(sandbox_received(sandbox.url)) >= 5, message="sending to be under way")
    own_redis.stop()
    wait_for(lambda: "Redis is unreachable" in worker.log() or worker.proc.poll() is not None,
             message="the worker to notice that Redis is gone")
    assert worker.proc.poll() is None, worker.log()[-3000:]
    # What it held is handed back (or recorded as sent): nothing stays claimed, and the backlog is still there.
    assert not claimed_ids(app)
    assert len(sandbox_received(sandbox.url)) < len(expected), "the backlog was gone before Redis stopped"
    own_redis.start()
    all_sent_once(app, sandbox.url, expected)
    assert worker.proc.poll() is None, worker.log()[-3000:]
    assert "found an unhandled exception" not in worker.log() and "Redis is back" in worker.log()
    wait_for(lambda: sync_settled(app), message="no job queued or running")


def test_what_klaviyo_accepted_is_recorded_even_when_redis_fails_right_after(app, connected, make_event, sandbox,
                                                                             start_worker, own_redis):
    """Redis goes away while Klaviyo is answering a send: the 202 is still recorded (the database is the truth),
    so that event is never sent again; the rest go once Redis is back."""
    expected = place_orders(app, make_event(connected), 1)
    faults(sandbox.url, {"latency_ms": 1500, "count": 1, "paths": ["/api/events"]})  # the first send: 1.5 s
    worker = start_worker(redis_url=own_redis.url, SYNC_SINGLE_THRESHOLD=1000)
    wait_for(lambda: sandbox_stats(sandbox.url)["faults_injected"] >= 1, message="the first send to be in flight")
    own_redis.stop()
    wait_for(lambda: sandbox_received(sandbox.url), message="the sandbox to accept the first event")
    first = set(sandbox_received(sandbox.url))
    wait_for(lambda: not claimed_ids(app) & first, message="the worker to write down the answer")
    with app.app_context():
        status = db.session.scalar(select(OutboxEvent.status).where(OutboxEvent.unique_id.in_(first)))
    assert status == "sent", "an event Klaviyo accepted was handed back because Redis failed after the send"
    own_redis.start()
    all_sent_once(app, sandbox.url, expected)
    assert worker.proc.poll() is None, worker.log()[-3000:]


def _recorded_sent(app) -> set[str]:
    with app.app_context():
        sent = set(db.session.scalars(select(OutboxEvent.unique_id).where(OutboxEvent.status == "sent")))
        db.session.remove()
    return sent


def test_a_long_send_keeps_its_claim_and_a_killed_workers_claims_come_back_in_seconds(
        app, connected, make_event, sandbox, start_worker):
    """Sends slower than the lease: the sending worker renews its claim (a heartbeat), so the other worker's
    sweeper never takes those rows and sends them again. Once the sender is killed, its claims come back
    within seconds and the other worker finishes; only the one send that was in flight may be repeated."""
    lease = {"OUTBOX_LEASE_SECONDS": 2, "SYNC_SINGLE_THRESHOLD": 1000}
    expected = place_orders(app, make_event(connected), 2)  # 6 events
    faults(sandbox.url, {"latency_ms": 2500, "paths": ["/api/events"]})  # each send outlasts the 2 s lease
    sender = start_worker(**lease)
    wait_for(lambda: len(claimed_ids(app)) == len(expected), message="the first worker to claim every row")
    other = start_worker(**lease)
    # Recorded as sent, not merely received by the sandbox: a send the sandbox has taken but not yet answered is
    # still in flight, and the one send in flight at the kill may go twice (see below).
    wait_for(lambda: len(_recorded_sent(app)) >= 2, timeout=30, message="two slow sends recorded")
    sender.kill()
    sent_before_kill = _recorded_sent(app)
    killed_at = time.monotonic()
    in_flight = claimed_ids(app)
    assert in_flight, "the killed worker held nothing"
    requests.delete(f"{sandbox.url}/_sandbox/faults", timeout=5)

    wait_for(lambda: not claimed_ids(app) & in_flight or set(sandbox_received(sandbox.url)) >= expected,
             timeout=20, message="the killed worker's claims to come back")
    recovered_in = time.monotonic() - killed_at
    wait_for(lambda: set(sandbox_received(sandbox.url)) >= expected, timeout=30, message="every event")
    wait_for(lambda: statuses(app) == {"sent": len(expected)}, message="every row marked sent")
    received = sandbox_received(sandbox.url)
    # What was recorded as sent before the kill was never sent a second time (no sweeper took a live worker's
    # rows)...
    assert {uid: received[uid] for uid in sent_before_kill} == dict.fromkeys(sent_before_kill, 1), received
    # ...and of what the dead worker held, only the send in flight at the kill may have gone twice.
    assert set(received) == expected and sum(received.values()) - len(expected) <= 1, received
    assert other.proc.poll() is None
    print(f"claims back {recovered_in:.1f} s after the kill (lease 2 s)")


def test_after_a_429_with_retry_after_2_sending_resumes_about_2_seconds_later(app, connected, make_event,
                                                                               sandbox, start_worker):
    """Klaviyo answers 429 with Retry-After: 2. Nothing goes out before those 2 s have passed, and sending resumes
    soon after them: not at the next sweep, which here is 30 s away."""
    expected = place_orders(app, make_event(connected), 2)
    faults(sandbox.url, {"status": 429, "retry_after": 2, "count": 1, "paths": ["/api/events"]})
    start_worker(SWEEP_INTERVAL_SECONDS=30, SYNC_SINGLE_THRESHOLD=1000)
    # A generous bound: without a wake-up at Retry-After this waits for the sweep, 30 s or more.
    wait_for(lambda: set(sandbox_received(sandbox.url)) >= expected, timeout=15, message="every event after the 429")
    sends = [entry for entry in api_requests(sandbox.url) if entry["path"] in SEND_PATHS]
    throttled = [entry["ts"] for entry in sends if entry["status"] == 429]
    assert len(throttled) == 1
    resumed = min(entry["ts"] for entry in sends if entry["ts"] > throttled[0])
    assert resumed - throttled[0] >= 2.0, "an event went out before Retry-After had passed"
    assert sandbox_received(sandbox.url) == dict.fromkeys(expected, 1)
    print(f"resumed {resumed - throttled[0]:.2f} s after the 429")


@pytest.mark.parametrize("where", ["sweep", "plan_wake"])
def test_a_sigterm_in_the_middle_of_a_sweep_still_stops_the_worker_warm(app, monkeypatch, where):
    """rq stops an idle worker by raising StopRequested from its SIGTERM handler, wherever it is. Mid-sweep that
    lands in a database call, inside an `except Exception` that logs and carries on: the stop must not be lost
    (it was: the worker ran on until its SIGKILL). Here the sweep gets the signal, and swallows what it raises."""
    import os
    import signal

    import worker as worker_module
    from portal.sync.queue import queue, redis_connection

    calls = []

    def interrupted():
        calls.append(where)
        if len(calls) > 1:  # out of the work loop, which `except Exception` would not be
            raise SystemExit("the worker swept again after its SIGTERM: the stop was lost")
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs right here, as it would mid-query
            time.sleep(0.01)
        except Exception:  # noqa: BLE001 - as the sweep's own parts do
            pass

    if where == "sweep":
        monkeypatch.setattr(worker_module, "sweep", interrupted)
    else:
        monkeypatch.setattr(worker_module, "sweep", lambda: None)
        monkeypatch.setattr(worker_module, "next_due_at", lambda: interrupted())
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with app.app_context():
            worker = worker_module.OutboxWorker([queue()], connection=redis_connection(), maintenance_interval=1)
            started = time.monotonic()
            worker.work(burst=False, with_scheduler=False, logging_level="WARNING")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert calls == [where]
    assert time.monotonic() - started < 5  # stopped after the sweep, not when a second signal came
