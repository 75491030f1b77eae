"""The sync worker: create the app once, then run an rq worker that also sweeps the outbox.

    python worker.py            # what the run command starts
    python worker.py --burst    # drain the queue and exit
"""
import argparse
import logging
import sys
import time

from rq import SimpleWorker

from portal import ConfigError, create_app
from portal.sync.jobs import sweep
from portal.sync.queue import queue, redis_connection


class OutboxWorker(SimpleWorker):
    """An rq worker whose periodic maintenance also runs the outbox sweeper.

    rq calls run_maintenance_tasks between jobs and while idle, and keeps doing so across a Redis restart,
    so rows that a dead worker or a lost job left behind are always picked up again.
    """

    rq_maintenance_every = 60.0  # rq's own registry cleaning needn't run as often as our sweep
    _rq_maintained_at = 0.0

    def run_maintenance_tasks(self):
        if time.monotonic() - self._rq_maintained_at >= self.rq_maintenance_every:
            super().run_maintenance_tasks()
            self._rq_maintained_at = time.monotonic()
        else:
            from rq.utils import now

            self.last_cleaned_at = now()  # rq schedules the next maintenance from this
        try:
            sweep()
        except Exception:  # noqa: BLE001 - the sweeper must never take the worker down
            logging.getLogger("portal.sync").exception("sweep failed")


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
        # worker_ttl bounds how long the worker blocks waiting for a job, so maintenance runs every few seconds.
        worker = OutboxWorker([queue()], connection=redis_connection(), maintenance_interval=interval,
                              worker_ttl=interval + 16)
        # No rq scheduler: retries are outbox rows with a next_attempt_at that the sweep picks up, so the
        # scheduler's child process (about 75 MB) would have nothing to do.
        worker.work(burst=args.burst, with_scheduler=False, logging_level="INFO")
    return 0


if __name__ == "__main__":
    sys.exit(main())
