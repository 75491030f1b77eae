"""On-sale benchmark: N orders committed while no worker runs, then W workers drain them into the sandbox
(Klaviyo's real rate limits on). Beside it, the baseline a user would otherwise write: a loop over the
official klaviyo-api SDK, one create_event per event, with the same bodies.

    .venv/bin/python -m bench.onsale                          # 10,000 orders, 2 workers, SQLite
    .venv/bin/python -m bench.onsale --workers 1,2,4          # one full run per worker count
    .venv/bin/python -m bench.onsale --orders 2000 --baseline-events 500
    .venv/bin/python -m bench.onsale --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python -m bench.onsale --profile-orders 1000    # pyinstrument over place_order for 1,000 orders

Targets (issue 5): drain of 10,000 orders <= 20 s, >= 30x the SDK loop per event, 0 lost, 0 duplicates,
worker peak RSS <= 150 MB.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    BULK_BURST, BULK_STEADY, CpuMeter, Stack, log_problems, pids_named, wait_for_quiet, bulk_floor_seconds, loadavg, machine, proc_status, single_floor_seconds,
    typical_order,
)

OURS, BASELINE = "SBX01HXYZ", "SBX02BASE"  # the sandbox's two accounts (bench/harness.py)


def place_orders(stack: Stack, organizer_id: int, event_id: int, count: int, profile: int = 0) -> dict:
    """Commit `count` orders through place_order, the product's own order path (what checkout calls)."""
    from portal.events.models import Event
    from portal.extensions import db
    from portal.orders.service import place_order

    profiler = None
    started = time.perf_counter()
    with stack.app.app_context():
        for index in range(count):
            if profile and index == 0:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
            event = db.session.get(Event, event_id)
            types = list(event.ticket_types)
            place_order(event, typical_order(event, index, types))
            if profiler and index + 1 == profile:
                profiler.stop()
            if (index + 1) % 2000 == 0:
                print(f"    ... {index + 1} orders in {time.perf_counter() - started:.1f} s", flush=True)
        db.session.remove()
    elapsed = time.perf_counter() - started
    out = {"orders": count, "seconds": elapsed, "orders_per_s": count / elapsed}
    if profiler:
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        Path("/tmp/bench-profiles").mkdir(exist_ok=True)
        path = Path("/tmp/bench-profiles") / f"place_order-{stack.db_label.lower()}.txt"
        path.write_text(text)
        out["profile"] = str(path)
        out["profile_text"] = text
    return out


def outbox_summary(stack: Stack, organizer_id: int) -> dict:
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import DeliveryAttempt, OutboxEvent

    with stack.app.app_context():
        by_status = dict(db.session.execute(
            select(OutboxEvent.status, func.count()).where(OutboxEvent.organizer_id == organizer_id)
            .group_by(OutboxEvent.status)).all())
        accepted_per_row = Counter(n for (n,) in db.session.execute(
            select(func.count()).select_from(DeliveryAttempt).join(OutboxEvent)
            .where(OutboxEvent.organizer_id == organizer_id, DeliveryAttempt.outcome == "accepted")
            .group_by(DeliveryAttempt.outbox_id)).all())
        outcomes = dict(db.session.execute(
            select(DeliveryAttempt.outcome, func.count()).select_from(DeliveryAttempt).join(OutboxEvent)
            .where(OutboxEvent.organizer_id == organizer_id).group_by(DeliveryAttempt.outcome)).all())
        via = dict(db.session.execute(
            select(DeliveryAttempt.via, func.count()).select_from(DeliveryAttempt).join(OutboxEvent)
            .where(OutboxEvent.organizer_id == organizer_id, DeliveryAttempt.outcome == "accepted")
            .group_by(DeliveryAttempt.via)).all())
        keys = set(db.session.execute(select(OutboxEvent.metric, OutboxEvent.unique_id)
                                      .where(OutboxEvent.organizer_id == organizer_id)).all())
        db.session.remove()
    return {"by_status": by_status, "accepted_attempts_per_row": dict(accepted_per_row), "outcomes": outcomes,
            "accepted_via": via, "keys": keys}


def drain(stack: Stack, organizer_id: int, workers: int, expected: int, timeout: float, profile=False) -> dict:
    """Start the workers; poll the sandbox until it has accepted every event; sample the workers' RSS."""
    rss_peak: dict[int, float] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for proc in stack.workers:
                for pid in [proc.pid]:
                    rss = proc_status(pid).get("VmRSS")
                    if rss:
                        rss_peak[pid] = max(rss_peak.get(pid, 0), rss)
            stop.wait(0.05)

    before = stack.sandbox.stats()["accepted"]["total"]
    groups = {"workers": lambda: [p.pid for p in stack.workers], "sandbox": lambda: [stack.sandbox.proc.pid],
              "redis": lambda: [stack.redis.proc.pid]}
    if stack.db_label == "PostgreSQL":
        groups["postgres (all backends)"] = lambda: pids_named("postgres:")
    cpu = CpuMeter(groups).__enter__()
    t0 = time.time()
    stack.start_workers(workers, profile=profile)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    accepted, polls = 0, 0
    deadline = t0 + timeout
    while time.time() < deadline:
        accepted = stack.sandbox.stats()["accepted"]["total"] - before
        polls += 1
        if accepted >= expected:
            break
        time.sleep(0.1)
    t_seen = time.time()
    cpu.__exit__(None, None, None)
    # The sandbox has every event; now wait until the outbox says so too (every row recorded as sent).
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import OutboxEvent

    settle_deadline = time.time() + 60
    unsettled = None
    with stack.app.app_context():
        while time.time() < settle_deadline:
            unsettled = db.session.scalar(select(func.count()).select_from(OutboxEvent).where(
                OutboxEvent.organizer_id == organizer_id, OutboxEvent.status != "sent"))
            db.session.remove()
            if not unsettled:
                break
            time.sleep(0.1)
    t_settled = time.time()
    # Let anything still in flight land (a duplicate would show up here), then read the peaks.
    time.sleep(1.5)
    stop.set()
    sampler.join()
    memory = stack.worker_memory()
    stack.stop_workers()
    newest = stack.sandbox.events(account_id=OURS, limit=1)
    log = stack.sandbox.requests_log(since=t0 - 1, account_id=OURS)
    api = [r for r in log if r["path"].startswith("/api/")]
    first_request = min((r["ts"] for r in api), default=None)
    last_ok = max((r["ts"] for r in api if r["status"] == 202), default=None)
    return {
        "workers": workers, "t0": t0, "accepted": accepted, "timed_out": accepted < expected,
        "drain_s": (newest[0]["received_at"] - t0) if newest else t_seen - t0, "poll_drain_s": t_seen - t0,
        "outbox_settled_s": t_settled - t0, "outbox_unsettled": unsettled,
        "log_problems": log_problems(stack.worker_logs()),
        "first_request_after_s": (first_request - t0) if first_request else None,
        "send_phase_s": (last_ok - first_request) if first_request and last_ok else None,
        "requests": dict(Counter(f"{r['path']} {r['status']}" for r in api)),
        "throttled_429": sum(1 for r in api if r["status"] == 429),
        "memory": memory, "rss_sampled_peak": rss_peak, "cpu": cpu.report(),
    }


def baseline(stack: Stack, organizer_id: int, count: int) -> dict:
    """The loop a user would write with the official SDK: one create_event per event, same bodies as ours,
    into a second sandbox account (its own rate-limit bucket and dedup space), with a real OAuth token."""
    from klaviyo_api import KlaviyoAPI
    from sqlalchemy import select

    from portal.extensions import db
    from portal.sync.models import OutboxEvent

    with stack.app.app_context():
        bodies = [json.loads(p) for p in db.session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.organizer_id == organizer_id)
            .order_by(OutboxEvent.id).limit(count))]
        db.session.remove()
    token = stack.access_token(stack.baseline_organizer)
    client = KlaviyoAPI(api_key=None, access_token=token, test_host=stack.sandbox.url)
    events_api = client.Events
    before = stack.sandbox.stats()["accepted"]["total"]
    errors = Counter()
    started = time.time()
    for body in bodies:
        try:
            events_api.create_event(body)
        except Exception as exc:  # noqa: BLE001 - count, keep going, as a naive loop would log and go on
            errors[type(exc).__name__] += 1
    elapsed = time.time() - started
    after = stack.sandbox.stats()
    log = stack.sandbox.requests_log(since=started - 1, account_id=BASELINE)
    return {"events": len(bodies), "seconds": elapsed, "events_per_s": len(bodies) / elapsed,
            "accepted": after["accepted"]["total"] - before, "errors": dict(errors),
            "throttled_429": sum(1 for r in log if r["status"] == 429), "requests": len(log)}


def run_once(args, workers: int, do_baseline: bool) -> dict:
    with Stack("onsale", args.database_url, keep=args.keep) as stack:
        print(f"\n=== on-sale: {args.orders:,} orders, {workers} worker(s), {stack.db_label}, tmp {stack.tmp}")
        organizer_id = stack.connect("onsale@organizer.test", account_index=0)
        stack.baseline_organizer = stack.connect("baseline@organizer.test", account_index=1) if do_baseline else None
        event_id = stack.make_event(organizer_id, capacity=10 * args.orders + 10)
        print(f"[1] placing {args.orders:,} orders through place_order (no worker running); {wait_for_quiet()} ...",
              flush=True)
        with CpuMeter({"redis": lambda: [stack.redis.proc.pid]} | (
                {"postgres (all backends)": lambda: pids_named("postgres:")} if stack.db_label == "PostgreSQL" else {})) as cpu:
            orders = place_orders(stack, organizer_id, event_id, args.orders, profile=args.profile_orders)
        pre = outbox_summary(stack, organizer_id)
        expected = sum(pre["by_status"].values())
        print(f"    {orders['orders']:,} orders in {orders['seconds']:.1f} s = {orders['orders_per_s']:.0f} orders/s; "
              f"outbox rows: {expected:,} ({expected / args.orders:.2f} events/order) {pre['by_status']}")
        print(f"    {cpu.report()}")
        if orders.get("profile_text"):
            print(f"    place_order profile ({args.profile_orders} orders) -> {orders['profile']}")
            print("\n".join("      " + line for line in orders["profile_text"].splitlines()[:60]))

        stats0 = stack.sandbox.stats()
        print(f"[2] starting {workers} worker(s); waiting for the sandbox to accept {expected:,} events; "
              f"{wait_for_quiet()} ...", flush=True)
        result = drain(stack, organizer_id, workers, expected, args.timeout, profile=args.profile_workers)
        post = outbox_summary(stack, organizer_id)
        stats1 = stack.sandbox.stats()
        sandbox_keys = {(e["metric"], e["unique_id"]) for e in stack.sandbox.events(account_id=OURS)}
        result.update({
            "orders": orders, "expected": expected, "outbox_before": pre["by_status"], "outbox_after": post["by_status"],
            "accepted_attempts_per_row": post["accepted_attempts_per_row"], "attempt_outcomes": post["outcomes"],
            "accepted_via": post["accepted_via"],
            "lost": len(pre["keys"] - sandbox_keys), "unexpected": len(sandbox_keys - pre["keys"]),
            "duplicates_ignored": stats1["duplicates_ignored"] - stats0["duplicates_ignored"],
            "sandbox_throttled_total": stats1["throttled_429"] - stats0["throttled_429"],
        })
        rows_sent_twice = sum(n for k, n in post["accepted_attempts_per_row"].items() if k > 1)
        result["rows_sent_more_than_once"] = rows_sent_twice
        report_drain(result)
        if do_baseline and args.baseline_events:
            print(f"[3] baseline: klaviyo-api SDK loop, {args.baseline_events:,} x Events.create_event; "
                  f"{wait_for_quiet()} ...", flush=True)
            result["baseline"] = baseline(stack, organizer_id, args.baseline_events)
            report_baseline(result)
        if args.profile_workers:
            out = Path("/tmp/bench-profiles")
            out.mkdir(exist_ok=True)
            for path in sorted(stack.tmp.glob("worker-*.profile.txt")):
                target = out / f"onsale-{stack.db_label.lower()}-w{workers}-{path.name}"
                shutil.copy(path, target)
                print(f"    worker profile: {target}")
        if args.keep:
            print(f"    (kept {stack.tmp}; worker logs there)")
        return result


def report_drain(r: dict) -> None:
    events = r["expected"]
    requests_count, floor = bulk_floor_seconds(events)
    _, our_floor = bulk_floor_seconds(events, int(BULK_BURST * 0.9), int(BULK_STEADY * 0.9))
    rate = events / r["drain_s"]
    hwm = [m.get("VmHWM", 0) for m in r["memory"]]
    kids = [c.get("VmHWM", 0) for m in r["memory"] for c in m["children"]]
    print(f"    drain time (workers' start -> last event accepted): {r['drain_s']:.2f} s"
          f"{'  ** TIMED OUT **' if r['timed_out'] else ''}  (seen by polling /_sandbox/stats: {r['poll_drain_s']:.2f} s)")
    if r["first_request_after_s"] is not None:
        print(f"      of which worker start-up until the first API request: {r['first_request_after_s']:.2f} s; "
              f"first -> last accepted request: {r['send_phase_s']:.2f} s")
    print(f"    outbox: every row recorded as sent {r['outbox_settled_s']:.2f} s after the workers' start"
          + (f"  ** {r['outbox_unsettled']} rows still not 'sent' after 60 s more **" if r["outbox_unsettled"] else ""))
    if r["log_problems"]:
        print(f"    ** worker logs: {r['log_problems']} **")
    print(f"    {r['cpu']}")
    print(f"    events: {events:,} expected, {r['accepted']:,} accepted -> {rate:,.0f} events/s")
    print("    API requests: " + ", ".join(f"{k}: {n}" for k, n in sorted(r["requests"].items())))
    print(f"    429s: {r['throttled_429']} (sandbox counter: {r['sandbox_throttled_total']})")
    print(f"    lost: {r['lost']}   unexpected: {r['unexpected']}   duplicates accepted: 0 (Klaviyo keeps one event "
          f"per unique_id); repeat sends it ignored (duplicates_ignored): {r['duplicates_ignored']}; outbox rows "
          f"accepted more than once: {r['rows_sent_more_than_once']}")
    print(f"    outbox after: {r['outbox_after']}   accepted via: {r['accepted_via']}   attempt outcomes: {r['attempt_outcomes']}")
    print(f"    rate-limit floor (Bulk Create, Klaviyo's limits): R = ceil({events:,}/1000) = {requests_count} requests; "
          f"floor = 60*floor((R-1)/150) + ceil(((R-1) mod 150 + 1)/10) = {floor:.0f} s  -> ours = {r['drain_s'] / floor:.2f}x floor")
    print(f"      (with our limiter's 0.9 headroom, 9/s and 135/min: {our_floor:.0f} s; one Create Event per event: "
          f"{single_floor_seconds(events):,.0f} s = {single_floor_seconds(events) / 60:.1f} min)")
    print("    worker peak RSS (VmHWM): " + ", ".join(f"{v:.1f} MB" for v in hwm)
          + ("; rq scheduler children: " + ", ".join(f"{v:.1f} MB" for v in kids) if kids else "")
          + "; sampled VmRSS peak: " + ", ".join(f"{v:.1f} MB" for v in r["rss_sampled_peak"].values()))


def report_baseline(r: dict) -> None:
    b = r["baseline"]
    ours = r["expected"] / r["drain_s"]
    print(f"    SDK loop: {b['events']:,} events in {b['seconds']:.2f} s = {b['events_per_s']:.1f} events/s; "
          f"accepted {b['accepted']:,}; errors {b['errors'] or 0}; 429s {b['throttled_429']}")
    sdk_same = max(r["expected"] / b["events_per_s"], single_floor_seconds(r["expected"]))
    print(f"    per-event ratio (ours {ours:,.0f} events/s vs SDK {b['events_per_s']:.1f} events/s): "
          f"{ours / b['events_per_s']:.1f}x")
    print(f"    for the same {r['expected']:,} events the SDK loop needs >= {sdk_same:,.0f} s "
          f"(its speed, and Create Event's 3,500/min floor of {single_floor_seconds(r['expected']):,.0f} s): "
          f"{sdk_same / r['drain_s']:.0f}x our drain time")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--workers", default="2", help="worker processes; a comma list runs once per count")
    parser.add_argument("--baseline-events", type=int, default=2_000, help="0 skips the SDK baseline")
    parser.add_argument("--database-url", help="default: SQLite in the temp dir")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--profile-orders", type=int, default=0, help="profile place_order over the first N orders")
    parser.add_argument("--profile-workers", action="store_true",
                        help="run the workers under pyinstrument (slower); profiles land in the temp dir (use --keep)")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average {loadavg()}")
    results = []
    for i, workers in enumerate(int(w) for w in args.workers.split(",")):
        results.append(run_once(args, workers, do_baseline=i == 0))
    print("\n=== summary")
    print(f"{'workers':>7} {'orders/s':>9} {'events':>7} {'drain s':>8} {'events/s':>9} {'x floor':>8} {'429s':>5} "
          f"{'lost':>5} {'resent':>6} {'peak RSS MB':>12}")
    for r in results:
        _, floor = bulk_floor_seconds(r["expected"])
        hwm = max(m.get("VmHWM", 0) for m in r["memory"])
        print(f"{r['workers']:>7} {r['orders']['orders_per_s']:>9.0f} {r['expected']:>7} {r['drain_s']:>8.2f} "
              f"{r['expected'] / r['drain_s']:>9.0f} {r['drain_s'] / floor:>8.2f} {r['throttled_429']:>5} {r['lost']:>5} "
              f"{r['duplicates_ignored'] + r['rows_sent_more_than_once']:>6} {hwm:>12.1f}")
    if results and results[0].get("baseline"):
        b = results[0]["baseline"]
        print(f"SDK baseline: {b['events_per_s']:.1f} events/s; ours/SDK per event: "
              f"{(results[0]['expected'] / results[0]['drain_s']) / b['events_per_s']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
