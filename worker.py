"""The sync worker: create the app once, then run an rq worker that also sweeps the outbox.

    python worker.py            # what the run command starts
    python worker.py --burst    # drain the queue and exit

It outlives Redis: when Redis goes away (a restart, an outage) it waits for it with backoff and carries on
where it was, and its sweeper catches up on whatever the queue lost. The outbox is in the database, so
nothing waiting is lost meanwhile, and what Klaviyo accepted is recorded there whatever Redis does.
"""
import argparse
import logging
import sys
import time
from contextlib import contextmanager

import redis
from rq import SimpleWorker, worker_registration
from rq.utils import now
from rq.worker import WorkerStatus

from portal import ConfigError, create_app
from portal.extensions import db
from portal.sync.jobs import sweep
from portal.sync.outbox import next_due_at
from portal.sync.queue import queue, redis_connection
from portal.types import utcnow

log = logging.getLogger("portal.sync")
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
MIN_TICK = 0.5  # seconds: however soon a row falls due, sweeps stay at least this far apart
POLL = 1.0  # seconds: the longest wait for a job in one go, so a moment planned meanwhile is missed by 1 s at most
LATE = 0.1  # seconds after the moment: a lease that ends at T is reclaimed by a sweep after T, not at it


class OutboxWorker(SimpleWorker):
    """An rq worker whose periodic maintenance also runs the outbox sweeper.

    rq calls run_maintenance_tasks between jobs and while idle. Besides every SWEEP_INTERVAL_SECONDS, the sweep
    runs the moment the next outbox row falls due (a Retry-After, a backoff), so a 429 with Retry-After: 2
    costs 2 s, not a sweep interval, and the moment a claim's lease runs out, so a dead worker's rows come back
    then. rq's scheduler stays off: the outbox rows are the schedule.
    """

    rq_maintenance_every = 60.0  # rq's own registry cleaning needn't run as often as our sweep
    max_connection_wait_time = 5.0  # rq's reconnect backoff while it waits for a job: 1, 2, 4, 5, 5... s
    _rq_maintained_at = 0.0
    _wake_at: float | None = None  # time.monotonic() when the next outbox row falls due, if one does
    _holding_stop = False  # in a sweep: a SIGTERM waits for its end (see _stop_held)
    _stop_held = False  # a SIGTERM came meanwhile

    # --- a warm shutdown that is never lost ---------------------------------------------------------------

    def _shutdown(self):
        """rq stops an idle worker by raising StopRequested from its SIGTERM handler, wherever the worker is.
        In a sweep that lands in the middle of a database call, inside an `except Exception` that logs it and
        carries on: the stop was lost, the worker ran on until its SIGKILL. There it waits for the sweep's end."""
        if self._holding_stop:
            self._stop_held = True
            return
        super()._shutdown()

    @contextmanager
    def _holding_a_stop(self):
        outer, self._holding_stop = self._holding_stop, True
        try:
            yield
        finally:
            self._holding_stop = outer
        if not outer and self._stop_held:
            self._stop_held = False
            super()._shutdown()  # StopRequested now, for rq's work loop (or a stop after the job, when busy)

    # --- the sweep: regularly, and when the next row falls due ------------------------------------------

    @property
    def dequeue_timeout(self) -> float:
        """How long one wait for a job lasts: POLL, or less when a row falls due sooner. (rq keeps this figure for
        a whole idle spell, re-reading it only after a job; POLL bounds how late a sweep planned meanwhile runs.
        Between two sweeps an idle worker only heartbeats: three Redis commands a second.)"""
        if self._wake_at is None:
            return POLL
        return min(POLL, max(MIN_TICK, self._wake_at - time.monotonic()))

    @property
    def should_run_maintenance_tasks(self) -> bool:
        if self._wake_at is not None and time.monotonic() >= self._wake_at:
            return True
        return super().should_run_maintenance_tasks

    def run_maintenance_tasks(self):
        with self._holding_a_stop():
            self._maintain()

    def _maintain(self) -> None:
        if time.monotonic() - self._rq_maintained_at >= self.rq_maintenance_every:
            self._rq_maintained_at = time.monotonic()
            try:
                super().run_maintenance_tasks()
            except REDIS_DOWN as exc:
                log.warning("rq's registry cleaning skipped: Redis failed (%s)", type(exc).__name__)
        self.last_cleaned_at = now()  # rq schedules the next maintenance from this
        self._rejoin()
        try:
            sweep()
        except Exception:  # noqa: BLE001 - the sweeper must never take the worker down
            log.exception("sweep failed")
        self._plan_wake()

    def _plan_wake(self) -> None:
        """Remember when the next outbox row falls due, so the worker sweeps then."""
        with self._holding_a_stop():
            self._plan_wake_now()

    def _plan_wake_now(self) -> None:
        try:
            due = next_due_at()
        except Exception:  # noqa: BLE001 - without the figure the regular sweep still runs
            log.exception("could not read when the next row is due")
            due = None
        finally:
            db.session.rollback()
        if due is None:
            self._wake_at = None
        else:
            self._wake_at = time.monotonic() + max(MIN_TICK, (due - utcnow()).total_seconds() + LATE)

    def execute_job(self, job, queue):
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            # rq's own bookkeeping of the job failed. The job's work is in the database already: what it sent
            # is recorded, what it still held is handed back, and the sweep sends that once Redis is back.
            self._state = WorkerStatus.IDLE  # so that a SIGTERM meanwhile stops us at once
            self.executions.clear()  # rq never got to clean up after the job; one job at a time runs here
            self._wait_for_redis(exc)  # which plans a sweep at once
            return
        self._plan_wake()

    # --- outliving Redis: rq's calls outside its own reconnect loop wait for Redis instead of quitting ----

    def check_for_suspension(self, burst: bool):
        try:
            super().check_for_suspension(burst)
        except REDIS_DOWN as exc:
            self._wait_for_redis(exc)

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:  # only queued in a pipeline; whoever executes it handles a failure
            return super().heartbeat(timeout, pipeline)
        try:
            super().heartbeat(timeout)
        except REDIS_DOWN as exc:
            self._wait_for_redis(exc)

    def set_state(self, state, pipeline=None):
        if pipeline is not None:
            return super().set_state(state, pipeline)
        try:
            super().set_state(state)
        except REDIS_DOWN as exc:
            self._wait_for_redis(exc)

    def teardown(self):
        try:
            super().teardown()
        except REDIS_DOWN as exc:
            log.warning("could not deregister from Redis (%s); rq forgets this worker by itself", type(exc).__name__)

    def _wait_for_redis(self, exc: Exception) -> None:
        """Redis went away: wait for it with backoff (0.5 s doubling to 5 s), then carry on where we were."""
        started, delay = time.monotonic(), 0.5
        log.warning("Redis is unreachable (%s); waiting for it. Nothing is lost: the outbox is in the database.",
                    exc)
        while not self._stop_requested:
            try:
                time.sleep(delay)
                self.connection.ping()
            except REDIS_DOWN:
                delay = min(delay * 2, self.max_connection_wait_time)
                continue
            log.warning("Redis is back after %.1f s; carrying on", time.monotonic() - started)
            self._rejoin()
            self._wake_at = time.monotonic()  # sweep at once: a restarted Redis has lost the queue
            return

    def _rejoin(self) -> None:
        """A restarted Redis has forgotten this worker: list it again, as rq did when it started."""
        if self.birth_date is None:
            return  # not registered yet: bootstrap does it
        try:
            if not self.connection.hexists(self.key, "birth"):
                with self.connection.pipeline() as pipeline:
                    pipeline.hset(self.key, mapping=self.serialize())
                    pipeline.hset(self.key, "state", self._state)
                    worker_registration.register(self, pipeline)
                    pipeline.expire(self.key, self.worker_ttl + 60)
                    pipeline.execute()
        except REDIS_DOWN:
            pass  # the next heartbeat notices, and waits


def wait_for_redis_at_start(connection) -> None:
    """Start even when Redis is not up yet (a machine booting): wait for it, saying so once."""
    delay = 0.5
    while True:
        try:
            connection.ping()
            return
        except REDIS_DOWN as exc:
            if delay == 0.5:
                log.warning("Redis is unreachable (%s); waiting for it before starting", exc)
            time.sleep(delay)
            delay = min(delay * 2, OutboxWorker.max_connection_wait_time)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        app = create_app()
    except ConfigError as exc:  # one line that says what to set, not a traceback
        print(f"The worker cannot start: {exc}", file=sys.stderr)
        return 1
    with app.app_context():
        interval = app.config["SWEEP_INTERVAL_SECONDS"]
        wait_for_redis_at_start(redis_connection())
        worker = OutboxWorker([queue()], connection=redis_connection(), maintenance_interval=interval,
                              worker_ttl=interval + 16)
        # No rq scheduler: retries are outbox rows with a next_attempt_at that the sweep picks up (at that very
        # moment, see OutboxWorker), so the scheduler's child process (about 75 MB) would have nothing to do.
        worker.work(burst=args.burst, with_scheduler=False, logging_level="INFO")
    return 0


if __name__ == "__main__":
    sys.exit(main())
