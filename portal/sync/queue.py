"""The Redis connection and the rq queue, and enqueueing delivery after a commit."""
import logging

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

log = logging.getLogger("portal.sync")


def redis_connection() -> Redis:
    """One client per app (it pools connections); short timeouts so a dead Redis never hangs a checkout."""
    app = current_app._get_current_object()
    client = app.extensions.get("redis")
    if client is None:
        client = Redis.from_url(app.config["REDIS_URL"], socket_timeout=5, socket_connect_timeout=1,
                                health_check_interval=30)
        app.extensions["redis"] = client
    return client


def queue() -> Queue:
    return Queue(current_app.config["RQ_QUEUE"], connection=redis_connection())


def delivery_marker(organizer_id: int) -> str:
    """The Redis key that says a delivery job for this organizer already waits in the queue."""
    return f"portal:deliver-queued:{organizer_id}"


def enqueue_delivery(organizer_id: int) -> bool:
    """Ask a worker to deliver this organizer's due outbox rows. Call only after the rows are committed.

    At most one delivery job per organizer waits in the queue at a time (a marker in Redis that the job
    clears when it starts, and that expires by itself should the job be lost);
    a running job that finds a large backlog calls this again, so idle workers join in. If Redis is down
    nothing is lost: the rows are in the database and the worker's sweeper picks them up.
    """
    try:
        marker = delivery_marker(organizer_id)
        if redis_connection().set(marker, 1, nx=True, ex=5):
            # By dotted name, so the queue does not import the job (the job imports the queue).
            queue().enqueue("portal.sync.jobs.deliver", organizer_id, result_ttl=0, failure_ttl=24 * 3600,
                            job_timeout=600)
        return True
    except RedisError as exc:
        log.warning("enqueue failed organizer=%s error=%s; the sweeper will deliver later", organizer_id,
                    type(exc).__name__)
        return False
