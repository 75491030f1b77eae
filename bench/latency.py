"""Purchase -> accepted by Klaviyo: with one idle worker running, place K orders one at a time through
place_order and measure, per order, from the order's commit to the sandbox's received_at of its Placed Order
(and of its last event), plus the worker-side view (outbox sent_at).

    .venv/bin/python -m bench.latency                      # 50 orders, 200 ms apart, SQLite
    .venv/bin/python -m bench.latency --orders 200 --spacing 0.1
    .venv/bin/python -m bench.latency --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench

Targets (issue 5): p50 <= 250 ms, p99 <= 1 s.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Stack, loadavg, machine, percentile, summary_ms, typical_order, wait_for_quiet,
)

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--spacing", type=float, default=0.2, help="seconds between orders")
    parser.add_argument("--warmup", type=int, default=3, help="orders placed (and not counted) before measuring")
    parser.add_argument("--sweeper-only", action="store_true",
                        help="do not enqueue after commit (as when Redis was briefly unreachable): only the worker's "
                             "outbox sweeper, every SWEEP_INTERVAL_SECONDS, picks the orders up")
    parser.add_argument("--database-url")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average {loadavg()}")

    from sqlalchemy import event as sa_event, select
    from sqlalchemy.orm import Session

    from portal.events.models import Event
    from portal.extensions import db
    from portal.orders.service import place_order
    from portal.sync.models import OutboxEvent

    if args.sweeper_only:
        import portal.orders.service

        portal.orders.service.enqueue_delivery = lambda organizer_id: False
    commits: list[float] = []
    sa_event.listen(Session, "after_commit", lambda session: commits.append(time.time()))

    with Stack("latency", args.database_url, keep=args.keep) as stack:
        print(f"=== latency: {args.orders} orders, {args.spacing * 1000:.0f} ms apart, 1 idle worker, "
              f"{stack.db_label}{', sweeper only (no enqueue)' if args.sweeper_only else ''}, tmp {stack.tmp}")
        organizer_id = stack.connect("latency@organizer.test")
        event_id = stack.make_event(organizer_id)
        stack.start_workers(1)
        time.sleep(3)  # let the worker start and go idle
        print(wait_for_quiet(), flush=True)
        placed: list[tuple[int, float]] = []  # (order id, commit time)
        with stack.app.app_context():
            for index in range(args.warmup + args.orders):
                event = db.session.get(Event, event_id)
                types = list(event.ticket_types)
                commits.clear()
                order = place_order(event, typical_order(event, index, types))
                if index >= args.warmup:
                    placed.append((order.id, commits[-1]))
                db.session.remove()
                time.sleep(args.spacing)
        # Wait until every event is in the sandbox.
        deadline = time.time() + 60
        with stack.app.app_context():
            while time.time() < deadline:
                left = db.session.scalar(select(db.func.count()).select_from(OutboxEvent)
                                         .where(OutboxEvent.status != "sent"))
                db.session.remove()
                if not left:
                    break
                time.sleep(0.2)
        events = stack.sandbox.events()
        by_key = {e["unique_id"]: e for e in events}
        with stack.app.app_context():
            rows = db.session.execute(select(OutboxEvent.order_id, OutboxEvent.unique_id, OutboxEvent.metric,
                                             OutboxEvent.sent_at, OutboxEvent.attempts)).all()
            db.session.remove()
        memory = stack.worker_memory()
        stack.stop_workers()
        requests = stack.sandbox.stats()["requests"]["by_path"]

    per_order: dict[int, list] = {}
    for order_id, unique_id, metric, sent_at, attempts in rows:
        per_order.setdefault(order_id, []).append((unique_id, metric, sent_at, attempts))
    placed_order_lat, last_event_lat, sent_at_lat, missing = [], [], [], 0
    for order_id, committed in placed:
        entries = per_order.get(order_id, [])
        received = [by_key[u]["received_at"] for u, *_ in entries if u in by_key]
        if len(received) != len(entries) or not entries:
            missing += 1
            continue
        placed_order_lat.append(by_key[f"order_{order_id}"]["received_at"] - committed)
        last_event_lat.append(max(received) - committed)
        sent = next(s for u, m, s, a in entries if u == f"order_{order_id}")
        sent_at_lat.append(sent.timestamp() - committed)

    print(f"orders measured: {len(placed)} (after {args.warmup} warm-up orders); events per order: "
          f"{statistics.fmean(len(v) for v in per_order.values()):.2f}; incomplete: {missing}")
    print(f"API requests: {requests}")
    print(f"commit -> Placed Order accepted (sandbox received_at):  {summary_ms(placed_order_lat)}")
    print(f"commit -> last event of the order accepted:             {summary_ms(last_event_lat)}")
    print(f"commit -> outbox sent_at of Placed Order (worker side): {summary_ms(sent_at_lat)}")
    p50, p99 = percentile(placed_order_lat, 50) * 1000, percentile(placed_order_lat, 99) * 1000
    print(f"targets: p50 <= 250 ms -> {p50:.0f} ms {'MET' if p50 <= 250 else 'MISSED'}; "
          f"p99 <= 1000 ms -> {p99:.0f} ms {'MET' if p99 <= 1000 else 'MISSED'}")
    print("worker RSS: " + ", ".join(f"VmHWM {m.get('VmHWM', 0):.1f} MB" for m in memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
