"""Sync under sustained order traffic: orders placed through place_order at a steady R orders/s for S seconds (from
producer processes), while real `python worker.py` processes send them to the sandbox with Klaviyo's real rate
limits on. Prints Bulk and single request counts, events per Bulk request, the most Bulk requests in any 1 s and
60 s span, 429s, lost/duplicates, purchase -> accepted p50/p90/p99, the drain of what was left when the load ended
(against Klaviyo's floor for it) and the workers' VmHWM. By default the same run on the last commit
(HEAD, exported with bench/snapshot.sh) is printed beside it.

    .venv/bin/python -m bench.sustained                                  # 300 orders/s for 60 s, 2 workers, vs HEAD
    .venv/bin/python -m bench.sustained --rate 60 --seconds 60 --compare none
    .venv/bin/python -m bench.sustained --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --producers 3

Run it alone on the machine: `flock /tmp/bench.lock .venv/bin/python -m bench.sustained ...`.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    BULK_BURST, BULK_STEADY, CpuMeter, Stack, bulk_floor_seconds, loadavg, log_problems, machine, percentile,
    pids_named, proc_status, run_on_commit, typical_order, wait_for_quiet,
)

OURS = "SBX01HXYZ"
BULK_PATH, SINGLE_PATH = "/api/event-bulk-create-jobs", "/api/events"


def producer(config: dict, event_id: int, rate: float, seconds: float, start_at: float, index: int, count: int,
             out) -> None:
    """One producer process: orders index, index+count, ... at start_at + k / rate (catching up when behind)."""
    from sqlalchemy import event as sa_event
    from sqlalchemy.orm import Session

    from portal import create_app
    from portal.events.models import Event
    from portal.extensions import db
    from portal.orders.service import place_order

    commits: list[float] = []
    sa_event.listen(Session, "after_commit", lambda session: commits.append(time.time()))
    app = create_app(config)
    placed, behind, errors = [], 0.0, {}
    with app.app_context():
        event = db.session.get(Event, event_id)
        types = list(event.ticket_types)
        db.session.remove()
        while time.time() < start_at:
            time.sleep(0.001)
        k = index
        while True:
            due = start_at + k / rate
            if due >= start_at + seconds:
                break
            now = time.time()
            if due > now:
                time.sleep(due - now)
            else:
                behind = max(behind, now - due)
            try:
                event = db.session.get(Event, event_id)
                commits.clear()
                order = place_order(event, typical_order(event, k, list(event.ticket_types)))
                placed.append((order.id, commits[-1]))
            except Exception as exc:  # noqa: BLE001 - e.g. SQLite's "database is locked": count it, go on
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            finally:
                db.session.remove()
            k += count
    out.put({"placed": placed, "behind": behind, "errors": errors})


def sustained(stack: Stack, args) -> dict:
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import DeliveryAttempt, OutboxEvent

    organizer_id = stack.connect("sustained@organizer.test")
    event_id = stack.make_event(organizer_id)
    stack.start_workers(args.workers)
    rss_peak: dict[int, float] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for proc in stack.workers:
                rss = proc_status(proc.pid).get("VmRSS")
                if rss:
                    rss_peak[proc.pid] = max(rss_peak.get(proc.pid, 0), rss)
            stop.wait(0.1)

    threading.Thread(target=sample, daemon=True).start()
    time.sleep(3)  # the workers start up and go idle
    quiet = wait_for_quiet()
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 2.0 + 0.5 * args.producers  # every producer made its app by then
    procs = [context.Process(target=producer, args=(stack.config(), event_id, args.rate, args.seconds, start_at, i,
                                                    args.producers, out)) for i in range(args.producers)]
    for proc in procs:
        proc.start()
    groups = {"workers": lambda: [p.pid for p in stack.workers], "sandbox": lambda: [stack.sandbox.proc.pid],
              "producers": lambda: [p.pid for p in procs if p.pid], "redis": lambda: [stack.redis.proc.pid]}
    if stack.db_label == "PostgreSQL":
        groups["postgres (all backends)"] = lambda: pids_named("postgres:")
    while time.time() < start_at:
        time.sleep(0.01)
    cpu = CpuMeter(groups).__enter__()
    results = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1))
        except Exception:  # noqa: BLE001 - queue.Empty: make sure no producer died without an answer
            if not any(proc.is_alive() for proc in procs) and out.empty():
                raise SystemExit("a producer process died; see its traceback above") from None
    for proc in procs:
        proc.join()
    t_end = time.time()
    cpu.__exit__(None, None, None)
    placed = dict(pair for r in results for pair in r["placed"])
    with stack.app.app_context():
        backlog = db.session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status != "sent"))
        db.session.remove()
    # Wait until every row is recorded as sent (or the timeout).
    deadline = time.time() + args.timeout
    left = backlog
    with stack.app.app_context():
        while time.time() < deadline:
            left = db.session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status != "sent"))
            db.session.remove()
            if not left:
                break
            time.sleep(0.1)
    time.sleep(1.5)  # anything still in flight lands (a duplicate would show up)
    stop.set()
    memory = stack.worker_memory()
    stack.stop_workers()
    with stack.app.app_context():
        rows = db.session.execute(select(OutboxEvent.order_id, OutboxEvent.unique_id, OutboxEvent.metric)
                                  .where(OutboxEvent.organizer_id == organizer_id)).all()
        accepted_via = dict(db.session.execute(
            select(DeliveryAttempt.via, func.count()).where(DeliveryAttempt.outcome == "accepted")
            .group_by(DeliveryAttempt.via)).all())
        per_row = Counter(n for (n,) in db.session.execute(
            select(func.count()).select_from(DeliveryAttempt).where(DeliveryAttempt.outcome == "accepted")
            .group_by(DeliveryAttempt.outbox_id)).all())
        by_status = dict(db.session.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)).all())
        db.session.remove()
    events = {e["unique_id"]: e for e in stack.sandbox.events(account_id=OURS)}
    stats = stack.sandbox.stats()
    log = [r for r in stack.sandbox.requests_log(since=start_at - 5, account_id=OURS) if r["path"].startswith("/api/")]
    bulk = sorted(r["ts"] for r in log if r["path"] == BULK_PATH)
    single = [r for r in log if r["path"] == SINGLE_PATH]
    latencies, placed_order_latencies, lost = [], [], 0
    for order_id, unique_id, metric in rows:
        if order_id not in placed:
            continue  # (none: every order here is the producers')
        event = events.get(unique_id)
        if event is None:
            lost += 1
            continue
        latency = event["received_at"] - placed[order_id]
        latencies.append(latency)
        if metric == "Placed Order":
            placed_order_latencies.append(latency)
    last_accepted = max((e["received_at"] for e in events.values()), default=t_end)
    span = max((t for _, t in placed.items()), default=start_at) - start_at
    return {
        "database": stack.db_label, "rate_asked": args.rate, "seconds": args.seconds, "workers": args.workers,
        "producers": args.producers, "orders": len(placed), "rate_reached": len(placed) / max(span, 1e-9),
        "producer_behind_max_s": max(r["behind"] for r in results), "events": len(rows),
        "producer_errors": sum(sum(r["errors"].values()) for r in results),
        "bulk_requests": len(bulk), "bulk_202": sum(1 for r in log if r["path"] == BULK_PATH and r["status"] == 202),
        "single_requests": len(single), "accepted_via": accepted_via,
        "events_per_bulk": accepted_via.get("bulk", 0) / max(1, sum(1 for r in log if r["path"] == BULK_PATH
                                                                  and r["status"] == 202)),
        "bulk_max_1s": max_in_window(bulk, 1.0), "bulk_max_60s": max_in_window(bulk, 60.0),
        "throttled_429": sum(1 for r in log if r["status"] == 429), "requests": dict(Counter(
            f"{r['path']} {r['status']}" for r in log)),
        "lost": lost, "unsent_at_timeout": left, "rows_accepted_twice": sum(n for k, n in per_row.items() if k > 1),
        "duplicates_ignored": stats["duplicates_ignored"], "outbox": by_status,
        "latency_ms": quantiles(latencies), "placed_order_latency_ms": quantiles(placed_order_latencies),
        "backlog_at_end": backlog, "drain_after_end_s": max(0.0, last_accepted - t_end) if backlog else 0.0,
        "drain_floor_s": bulk_floor_seconds(backlog)[1],
        "vmhwm_mb": [round(m.get("VmHWM", 0), 1) for m in memory],
        "children": [[round(c.get("VmHWM", 0), 1) for c in m["children"]] for m in memory],
        "cpu": cpu.report(), "quiet": quiet, "log_problems": log_problems(stack.worker_logs()),
    }


def max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def quantiles(values_s: list[float]) -> dict:
    ms = [v * 1000 for v in values_s]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "max": max(ms)}


def run_here(args) -> dict:
    with Stack("sustained", args.database_url, keep=args.keep) as stack:
        if not args.json:
            print(f"=== sustained: {args.rate:g} orders/s for {args.seconds:g} s, {args.workers} worker(s), "
                  f"{args.producers} producer(s), {stack.db_label}, tmp {stack.tmp}", flush=True)
        return sustained(stack, args)


def run_commit(rev: str, args) -> dict:
    """The same run on another commit, or on a tree exported already (bench.harness.run_on_commit)."""
    return run_on_commit("bench.sustained", rev, [
        "--rate", str(args.rate), "--seconds", str(args.seconds), "--workers", str(args.workers),
        "--producers", str(args.producers), "--timeout", str(args.timeout)], args.database_url, timeout=7200)


ROWS = [
    ("orders placed (rate reached, orders/s)", lambda r: f"{r['orders']:,} ({r['rate_reached']:.0f}/s)"),
    ("producer behind schedule, max", lambda r: f"{r['producer_behind_max_s']:.2f} s"),
    ("orders that failed to commit", lambda r: f"{r.get('producer_errors', 0)}"),
    ("events", lambda r: f"{r['events']:,}"),
    ("Bulk Create requests (202)", lambda r: f"{r['bulk_requests']} ({r['bulk_202']})"),
    ("single Create Event requests", lambda r: f"{r['single_requests']:,}"),
    ("mean events per Bulk request", lambda r: f"{r['events_per_bulk']:.0f}"),
    ("most Bulk requests in 1 s / 60 s", lambda r: f"{r['bulk_max_1s']} / {r['bulk_max_60s']}"),
    ("429s", lambda r: f"{r['throttled_429']}"),
    ("lost / rows accepted twice / repeats", lambda r: f"{r['lost']} / {r['rows_accepted_twice']} / "
                                                        f"{r['duplicates_ignored']}"),
    ("purchase -> accepted p50 / p90 / p99", lambda r: _lat(r["latency_ms"])),
    ("  Placed Order only", lambda r: _lat(r["placed_order_latency_ms"])),
    ("left when the load ended", lambda r: f"{r['backlog_at_end']:,} events"),
    ("its drain (Klaviyo's floor)", lambda r: f"{r['drain_after_end_s']:.1f} s ({r['drain_floor_s']:.0f} s)"),
    ("worker VmHWM", lambda r: ", ".join(f"{v:.1f}" for v in r["vmhwm_mb"]) + " MB"),
]


def _lat(q: dict) -> str:
    if not q.get("n"):
        return "-"
    return f"{q['p50']:.0f} / {q['p90']:.0f} / {q['p99']:.0f} ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300, help="orders per second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--producers", type=int, default=2, help="producer processes placing the orders")
    parser.add_argument("--timeout", type=float, default=300, help="how long to wait for the rest after the load")
    parser.add_argument("--compare", default="HEAD",
                        help="commit (or a directory exported with bench/snapshot.sh) to run side by side, or none")
    parser.add_argument("--database-url", help="default: SQLite in the temp dir")
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON (used for --compare)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    if not args.json:
        print(f"machine: {machine()}; load average {loadavg()}", flush=True)
    here = run_here(args)
    if args.json:
        print(json.dumps(here, default=str))
        return 0
    other, sha = None, None
    if args.compare != "none":
        sha = args.compare if Path(args.compare).is_dir() else subprocess.run(
            ["git", "rev-parse", "--short", args.compare], cwd=ROOT, check=True, capture_output=True,
            text=True).stdout.strip()
        print(f"... and the same on {sha}", flush=True)
        other = run_commit(args.compare, args)
    width = max(len(name) for name, _ in ROWS)
    print(f"\n{'':<{width}}  {'this tree':>26}" + (f"  {sha:>26}" if other else ""))
    for name, show in ROWS:
        print(f"{name:<{width}}  {show(here):>26}" + (f"  {show(other):>26}" if other else ""))
    for label, r in (("this tree", here), (sha, other)):
        if r is None:
            continue
        print(f"\n{label}: {r['cpu']}; {r['quiet']}")
        print(f"  requests: {r['requests']}; accepted via: {r['accepted_via']}; outbox: {r['outbox']}")
        if r["log_problems"]:
            print(f"  ** worker logs: {r['log_problems']} **")
        if r["unsent_at_timeout"]:
            print(f"  ** {r['unsent_at_timeout']} rows still not sent {args.timeout:.0f} s after the load **")
    print(f"\nKlaviyo's Bulk budget: {BULK_BURST}/s and {BULK_STEADY}/min (ours with 0.9 headroom: "
          f"{int(BULK_BURST * 0.9)}/s, {int(BULK_STEADY * 0.9)}/min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
