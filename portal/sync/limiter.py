"""One rate limiter per Klaviyo installation, kept in Redis and so shared by every worker process.

Klaviyo counts requests per installed app instance in fixed windows: a 1 s burst window and a 60 s
steady window, per endpoint, and for a few endpoints (Create Flow, Create Segment) a daily one. We keep a
sliding log of our requests, a little under Klaviyo's figures, and additionally stop everyone when Klaviyo
answers 429 (Retry-After) or reports RateLimit-Remaining: 0.

Beside the limits, a pace (reserve): requests that need not go at once (a Bulk Create that is not full) take the
next slot of an installation's endpoint, a fixed spacing after the previous one, so sustained traffic spends the
steady budget evenly instead of in a burst followed by a stall (see portal/sync/jobs.py).
"""
import logging
import random
import time
import uuid
from collections.abc import Mapping

from redis.exceptions import RedisError

from portal.sync.queue import redis_connection

log = logging.getLogger("portal.sync")

# endpoint -> (burst per second, steady per minute), from Klaviyo's published tiers
KLAVIYO_LIMITS = {
    "events": (350, 3500),  # XL: Create Event
    "bulk": (10, 150),  # M: Bulk Create Events
    "accounts": (1, 15),  # XS: Get Accounts
    "metrics": (10, 150),  # M: Get Metrics
    "events_read": (350, 3500),  # XL: Get Events
    "flows_read": (3, 60),  # S: Get Flows
    "flows_create": (1, 15),  # XS: Create Flow (and 100 a day)
    "segments_create": (1, 15),  # XS: Create Segment (and 100 a day)
    "lists_read": (75, 750),  # L: Get Lists
    "lists_create": (10, 150),  # M: Create List (and 150 a day)
    "subscribe": (75, 750),  # L: Bulk Subscribe Profiles
}
# endpoint -> requests a day. No headroom here: a sliding 24 h log never holds more than any fixed day does.
KLAVIYO_DAILY_LIMITS = {"flows_create": 100, "segments_create": 100, "lists_create": 150}
HEADROOM = 0.9

# A sliding log per window: at most N requests in ANY 1 s (and any 60 s) span, so we stay under
# Klaviyo's fixed windows however theirs are aligned with ours. Redis's clock is the one clock.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = redis.call('PTTL', KEYS[3])
if blocked > 0 then return blocked end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + 1000 - now)
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + 60000 - now)
end
local daily = tonumber(ARGV[4])
if daily > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 86400000)
  if redis.call('ZCARD', KEYS[4]) >= daily then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + 86400000 - now)
  end
  redis.call('ZADD', KEYS[4], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[4], 86401000)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], 2000)
redis.call('PEXPIRE', KEYS[2], 61000)
return 0
"""


# Pacing: a reservation of the next send slot, so that requests which are not full go out at most one per
# `spacing` (the steady budget's pace) across every worker. A full request (a backlog) takes no slot: it goes now,
# bound only by the windows above, and the next paced request is spaced from it. With a join margin, a paced
# request that finds another worker already waiting for a slot more than the margin away gets -(that wait)
# instead of a slot of its own: it hands its rows to that worker, which takes in more rows when its slot comes.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stored = redis.call('GET', KEYS[1])
local last = -1
if stored then last = tonumber(stored) end
if ARGV[2] == '1' then
  if now > last then redis.call('SET', KEYS[1], now, 'PX', 120000) end
  return 0
end
local join = tonumber(ARGV[3])
if join > 0 and last - now > join then return now - last end
local slot = math.max(now, last + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], slot, 'PX', slot - now + 120000)
return slot - now
"""
_SLOT_IN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stored = redis.call('GET', KEYS[1])
if not stored then return -1 end
return tonumber(stored) - now
"""


def _limits(endpoint: str) -> tuple[int, int]:
    burst, steady = KLAVIYO_LIMITS[endpoint]
    return max(int(burst * HEADROOM), 1), max(int(steady * HEADROOM), 1)


def _keys(installation: str, endpoint: str):
    base = f"portal:rl:{installation}:{endpoint}"
    return f"{base}:burst", f"{base}:steady", f"{base}:blocked", f"{base}:daily"


def try_acquire(installation: str, endpoint: str) -> float:
    """Take one request slot. Returns 0 when granted, else how many seconds to wait before asking again."""
    burst, steady = _limits(endpoint)
    daily = KLAVIYO_DAILY_LIMITS.get(endpoint, 0)
    wait_ms = redis_connection().eval(_ACQUIRE, 4, *_keys(installation, endpoint), burst, steady, uuid.uuid4().hex,
                                      daily)
    return int(wait_ms) / 1000.0


def daily_left(installation: str, endpoint: str) -> int | None:
    """Requests this endpoint still allows us in the last 24 hours, or None when it has no daily limit."""
    limit = KLAVIYO_DAILY_LIMITS.get(endpoint)
    if limit is None:
        return None
    r = redis_connection()
    seconds, micros = r.time()  # Redis's clock, the one the log is kept by
    now = seconds * 1000 + micros // 1000
    used = r.zcount(_keys(installation, endpoint)[3], now - 86_400_000, now)
    return max(0, limit - used)


def pace(endpoint: str) -> tuple[int, int]:
    """(per second, per minute) at which we send to this endpoint: Klaviyo's figures less our headroom."""
    return _limits(endpoint)


def acquire(installation: str, endpoint: str, max_wait: float = 2.0) -> float:
    """Wait (up to max_wait seconds) for a slot. Returns 0 when granted, else the remaining wait."""
    deadline = time.monotonic() + max_wait
    while True:
        wait = try_acquire(installation, endpoint)
        if wait == 0:
            return 0.0
        if time.monotonic() + wait > deadline:
            return wait
        time.sleep(wait + random.uniform(0, 0.05))  # jitter, so workers don't wake in lockstep


def _pace_key(installation: str, endpoint: str) -> str:
    return f"portal:pace:{installation}:{endpoint}"


def reserve(installation: str, endpoint: str, spacing: float, full: bool, join_margin: float = 0.0) -> float:
    """Reserve the next slot for a request to this endpoint, `spacing` seconds after the previous one of this
    installation (by any worker). Returns how many seconds to wait for it (0: go now). A full request (full=True)
    never waits here: it marks now as the latest slot, so the next paced request is spaced from it.

    With join_margin > 0, when another worker already waits for a slot more than join_margin seconds away, no slot
    is taken and the answer is negative: minus that worker's wait. Hand it the rows (release them): it takes them
    in when its slot comes. Two calls never get the same slot (one Lua script, Redis's clock)."""
    wait_ms = redis_connection().eval(_RESERVE, 1, _pace_key(installation, endpoint), int(spacing * 1000),
                                      1 if full else 0, int(join_margin * 1000))
    return int(wait_ms) / 1000.0


def slot_in(installation: str, endpoint: str) -> float:
    """Seconds until the latest reserved slot of this endpoint (negative once it has passed, or none was taken)."""
    return int(redis_connection().eval(_SLOT_IN, 1, _pace_key(installation, endpoint))) / 1000.0


def mark_sustained(installation: str, endpoint: str, seconds: float) -> None:
    """Say that this endpoint carries sustained traffic for this installation, for the next `seconds`."""
    redis_connection().set(f"{_pace_key(installation, endpoint)}:sustained", 1, px=max(int(seconds * 1000), 1))


def sustained(installation: str, endpoint: str) -> bool:
    """Did mark_sustained() say so within its last `seconds`?"""
    return bool(redis_connection().exists(f"{_pace_key(installation, endpoint)}:sustained"))


def blocked(installation: str, endpoint: str) -> bool:
    """Has a 429 (Retry-After) or RateLimit-Remaining: 0 stopped everyone calling this endpoint for now?"""
    return (redis_connection().pttl(_keys(installation, endpoint)[2]) or 0) > 0


def block(installation: str, endpoint: str, seconds: float) -> None:
    """Stop every worker from calling this endpoint for this installation for `seconds` (429, Remaining 0)."""
    blocked = _keys(installation, endpoint)[2]
    ms = max(int(seconds * 1000), 1)
    r = redis_connection()
    current = r.pttl(blocked)
    if current is None or current < ms:
        r.set(blocked, 1, px=ms)


def observe(installation: str, endpoint: str, status: int, headers: Mapping[str, str]) -> None:
    """Learn from Klaviyo's answer: RateLimit-* headers on success, Retry-After on 429; keep meter figures.

    Never raises for Redis: it runs right after a send, and what Klaviyo answered must still reach the outbox
    (the database is the truth). A lost observation costs at most one more 429, whose row waits anyway."""
    try:
        _observe(installation, endpoint, status, headers)
    except RedisError as exc:
        log.warning("rate-limit bookkeeping skipped: Redis failed (%s)", type(exc).__name__)


def _observe(installation: str, endpoint: str, status: int, headers: Mapping[str, str]) -> None:
    r = redis_connection()
    meter = f"portal:meter:{installation}"
    now = time.time()
    if status == 429:
        try:
            retry_after = int(headers.get("Retry-After", "1"))
        except ValueError:
            retry_after = 1
        block(installation, endpoint, retry_after + random.uniform(0.05, 0.5))
        r.zadd(f"{meter}:429s", {f"{now}:{random.random()}": now})
        r.zremrangebyscore(f"{meter}:429s", 0, now - 3600)
        r.expire(f"{meter}:429s", 3700)
        return
    remaining = headers.get("RateLimit-Remaining")
    if remaining is not None:
        r.hset(meter, mapping={"remaining": remaining, "endpoint": endpoint, "at": now})
        r.expire(meter, 3600)
        try:
            if int(remaining) <= 0:
                block(installation, endpoint, float(headers.get("RateLimit-Reset", "1")))
        except ValueError:
            pass


def meter(installation: str) -> dict:
    """Figures for the rate-limit meter: RateLimit-Remaining last reported, and 429s in the last hour."""
    r = redis_connection()
    key = f"portal:meter:{installation}"
    data = {k.decode(): v.decode() for k, v in (r.hgetall(key) or {}).items()}
    now = time.time()
    data["throttled_last_hour"] = r.zcount(f"{key}:429s", now - 3600, now)
    return data
