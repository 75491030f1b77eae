"""The run command's Redis checks: is REDIS_URL reachable, and which database of a shared Redis is this copy's.

Two copies of ./scripts/run (two checkouts, or one checkout with two databases) on one machine must not share a
Redis database: the rq queue, the rate limiter, the send gate and the OAuth states are all keyed by ids that
only mean something in one portal database, so one copy's worker would take the other's jobs. On a Redis that
is already running, each copy therefore claims a database of its own (5, 6, ... 15), with a key that names the
copy and expires a minute after the run command stops renewing it.
"""
from __future__ import annotations

import re

import redis

CLAIM_KEY = "portal:run-command:copy"
CLAIM_SECONDS = 60  # the run command renews its claim every third of this; a killed one frees it this late
FIRST_DB, LAST_DB = 5, 15  # Redis has 16 databases by default; 0-4 are left to whatever else uses this Redis
TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 2}


def shown(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)


def problem_with(url: str) -> str | None:
    """None when a Redis answers PING at url, else one line saying what is wrong and what to do."""
    fix = "Start that Redis, correct REDIS_URL, or unset it and ./scripts/run brings its own."
    try:
        with redis.Redis.from_url(url, **TIMEOUTS) as client:
            client.ping()
    except ValueError as exc:
        return f"REDIS_URL={shown(url)} is not a Redis URL ({exc}). Use redis://host:port/db."
    except redis.AuthenticationError:
        return f"the Redis at REDIS_URL={shown(url)} refuses the password in the URL (or wants one). {fix}"
    except redis.ResponseError as exc:
        return f"the Redis at REDIS_URL={shown(url)} answers, but: {exc}. {fix}"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return f"nothing answers at REDIS_URL={shown(url)} ({_reason(exc)}). {fix}"
    return None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".")
    return text.split(". ")[-1] if ". " in text else text  # "Error 111 connecting to h:p. Connection refused"


class Claim:
    """This copy's database on a shared Redis: renew() it while running, release() it when done."""

    def __init__(self, port: int, db: int, copy: str, host: str = "127.0.0.1"):
        self.db, self.copy = db, copy
        self.client = redis.Redis(host=host, port=port, db=db, **TIMEOUTS)
        self.url = f"redis://{host}:{port}/{db}"

    def renew(self) -> str | None:
        """Keep the claim; None, or a line to show when it has been lost to another copy."""
        try:
            if self.client.set(CLAIM_KEY, self.copy, nx=True, ex=CLAIM_SECONDS):
                return None
            owner = self.client.get(CLAIM_KEY)
            if owner is None or owner.decode() == self.copy:
                self.client.set(CLAIM_KEY, self.copy, ex=CLAIM_SECONDS)
                return None
            return f"Redis database {self.db} is now also used by another copy ({owner.decode()})"
        except redis.RedisError:
            return None  # the worker says when Redis is down; renewing again later is enough

    def release(self) -> None:
        try:
            if self.client.get(CLAIM_KEY) == self.copy.encode():
                self.client.delete(CLAIM_KEY)
        except redis.RedisError:
            pass
        finally:
            self.client.close()


def claim_database(port: int, copy: str, host: str = "127.0.0.1") -> tuple[Claim | None, list[str]]:
    """Claim the first database of the Redis on host:port that no other copy holds (this copy's own if it
    still holds one). Returns the claim, or None when every database is taken, and the other copies seen."""
    others = []
    for db in range(FIRST_DB, LAST_DB + 1):
        claim = Claim(port, db, copy, host)
        try:
            if claim.client.set(CLAIM_KEY, copy, nx=True, ex=CLAIM_SECONDS):
                return claim, others
            owner = claim.client.get(CLAIM_KEY)
        except redis.ResponseError:  # "DB index is out of range": this Redis has fewer databases
            claim.client.close()
            break
        if owner is None or owner.decode() == copy:  # expired meanwhile, or ours from a run not yet expired
            claim.client.set(CLAIM_KEY, copy, ex=CLAIM_SECONDS)
            return claim, others
        others.append(f"database {db}: {owner.decode()}")
        claim.client.close()
    return None, others
