"""The send gate: makes Disconnect a hard stop.

Every send registers itself in Redis before it checks the connection and leaves when the HTTP call is
done. Disconnect first closes the gate (no new send may enter), then waits for the sends already inside
to finish, and only then commits. So once Disconnect has returned, no request for that organizer can
still reach Klaviyo.
"""
import time
import uuid
from contextlib import contextmanager

from redis.exceptions import RedisError

from portal.sync.queue import redis_connection

_ENTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


def _keys(connection_id: int):
    return f"portal:gate:{connection_id}:closed", f"portal:gate:{connection_id}:inflight"


@contextmanager
def sending(connection_id: int, lease_seconds: float = 60):
    """Yields True when a send may go ahead, False while a Disconnect is closing the gate."""
    closed, inflight = _keys(connection_id)
    r = redis_connection()
    member = uuid.uuid4().hex
    expires = int((time.time() + lease_seconds) * 1000)
    entered = r.eval(_ENTER, 2, closed, inflight, expires, member, int(lease_seconds * 1000) + 1000)
    try:
        yield bool(entered)
    finally:
        if entered:
            try:
                r.zrem(inflight, member)
            except RedisError:
                pass  # the entry expires with its lease; failing here would hand back rows Klaviyo just accepted


def close_and_drain(connection_id: int, timeout: float = 30.0) -> None:
    """Close the gate and wait until no send is in flight (sends past their lease are ignored)."""
    closed, inflight = _keys(connection_id)
    r = redis_connection()
    r.set(closed, 1, ex=int(timeout) + 30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r.zremrangebyscore(inflight, 0, int(time.time() * 1000))
        if r.zcard(inflight) == 0:
            return
        time.sleep(0.02)


def reopen(connection_id: int) -> None:
    r = redis_connection()
    r.delete(_keys(connection_id)[0])
