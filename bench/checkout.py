"""Checkout throughput under gunicorn, from a load generator on loopback, with Klaviyo connected (so every
order writes its outbox rows) and a sync worker running; then the Integrations page's and View Details' latency,
logged in. Then the same on the previous commit (--compare, exported with bench/snapshot.sh), side by side.

    .venv/bin/python -m bench.checkout                                  # SQLite, gunicorn 2x4, wrk, vs HEAD~1
    .venv/bin/python -m bench.checkout --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python -m bench.checkout --configs 2x4,3x4,4x1 --compare none      # gunicorn configurations
    .venv/bin/python -m bench.checkout --seconds 300 --compare none             # a 5-minute on-sale
    .venv/bin/python -m bench.checkout --profile 300 --compare none  # SQL per checkout, pyinstrument in-process

--configs is a list of WORKERSxTHREADS for gunicorn (threads > 1 uses the gthread worker class, else sync).
The load generator posts the real Event Page checkout form (with the signed form_token read from the event
page once per client, as a browser that loaded the page would) for a typical purchase: the buyer's ticket
plus a guest's (every fourth order a third, VIP, ticket), each from its own buyer's address (X-Forwarded-For
behind PROXY_FIX_X_FOR=1). It does not follow the 303 to the confirmation page. orders/s counts orders committed
in the database during the run. Server times are gunicorn's own (%(D)s in its access log). After the load it
waits for the sync worker to send what was still waiting, and compares that time with Klaviyo's floor for it.

Targets (issue 14): checkout >= 300 orders/s on PostgreSQL (p99 <= 250 ms), >= 200 on SQLite; over a 5-minute
on-sale 0 x 429, nothing lost or sent twice, the backlog at the end drained within 1.3x Klaviyo's floor;
View Details p50 <= 15 ms after 10,000 orders (--preload 10000); worker peak RSS <= 150 MB.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.harness import (  # noqa: E402
    PASSWORD, CpuMeter, Stack, bulk_floor_seconds, checkout_form, pids_named, run_on_commit, wait_for_quiet, free_port, loadavg, machine, percentile,
    summary_ms,
)
from devtools import processes  # noqa: E402

EMAIL = "checkout@organizer.test"


class Gunicorn:
    def __init__(self, stack: Stack, workers: int, threads: int):
        self.stack, self.workers, self.threads = stack, workers, threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = stack.tmp / f"access-{workers}x{threads}.log"

    def __enter__(self):
        # The documented way through the checkout's abuse limits: the load stands for many buyers behind one
        # trusted proxy (each request names its buyer in X-Forwarded-For), and one page's form token stands for
        # every buyer's visit (a bench-only allowance). See docs/security.md.
        env = self.stack.env(PROXY_FIX_X_FOR="1", FORM_TOKEN_MAX_ORDERS="100000000")
        self.proc = processes.start_portal(self.port, env, workers=self.workers, threads=self.threads,
                                           options=["-k", "gthread" if self.threads > 1 else "sync",
                                                    "--access-logfile", str(self.access_log),
                                                    "--access-logformat", "%(s)s %(D)s %(m)s %(U)s",
                                                    "--error-logfile", str(self.stack.tmp / "gunicorn-error.log"),
                                                    "--backlog", "2048"])
        for _ in range(2 * self.workers * self.threads):  # warm every worker: imports, templates, pools
            requests.get(f"{self.url}/healthz", timeout=5)
        return self

    def __exit__(self, *exc):
        processes.stop(self.proc, timeout=20)

    def server_times(self, path_prefix: str, method: str = "GET") -> list[float]:
        """Seconds per request from gunicorn's access log (%(D)s is microseconds)."""
        out = []
        for line in self.access_log.read_text().splitlines():
            status, micros, m, path = line.split(" ", 3)
            if m == method and path.startswith(path_prefix):
                out.append(int(micros) / 1e6)
        return out

    def statuses(self, path_prefix: str, method: str) -> Counter:
        counts = Counter()
        for line in self.access_log.read_text().splitlines():
            status, _micros, m, path = line.split(" ", 3)
            if m == method and path.startswith(path_prefix):
                counts[status] += 1
        return counts

    def clear_log(self):
        self.access_log.write_text("")


def page_form(url: str) -> tuple[str, list[int]]:
    html = requests.get(url, timeout=10).text
    token = re.search(r'name="form_token" value="([^"]+)"', html).group(1)
    types = sorted({int(t) for t in re.findall(r'name="qty-(\d+)"', html)})
    return token, types


WRK_SCRIPT = r"""
-- Posts a typical purchase as the Event Page's checkout form; a different buyer every request.
local threads_started = 0
function setup(thread)
  threads_started = threads_started + 1
  thread:set("tid", threads_started)
end
local n = 0
local function enc(s) return (s:gsub("([^%w%-%._~])", function(c) return string.format("%%%02X", string.byte(c)) end)) end
request = function()
  n = n + 1
  local i = tostring(tid) .. "x" .. tostring(n)
  local vip = (n % 4 == 3)
  local body = "form_token=" .. enc(TOKEN) .. "&first_name=Pat&last_name=Buyer" .. i
    .. "&email=" .. enc("pat.buyer" .. i .. "@fans-mail.net") .. "&phone=" .. enc("+1 212 555 0100")
    .. "&qty-" .. GENERAL .. "=2&qty-" .. VIP .. "=" .. (vip and "1" or "0")
    .. "&attendee-0-same=1&attendee-1-first_name=Sam&attendee-1-last_name=Guest" .. i
    .. "&attendee-1-email=" .. enc("sam.guest" .. i .. "@fans-mail.net")
  if vip then body = body .. "&attendee-2-same=1" end
  -- 62,500 buyers' addresses per client thread, so no buyer meets the per-address limit (10 orders a minute)
  local buyer = tostring(10 + tid % 200) .. "." .. tostring(math.floor(n / 250) % 250) .. "." .. tostring(n % 250) .. ".1"
  return wrk.format("POST", PATH, {["Content-Type"] = "application/x-www-form-urlencoded",
                                   ["X-Forwarded-For"] = buyer}, body)
end
"""


def load_wrk(stack, url, path, token, types, seconds, concurrency, threads) -> dict:
    script = stack.tmp / "checkout.lua"
    script.write_text(f'TOKEN = "{token}"\nGENERAL = "{types[0]}"\nVIP = "{types[1]}"\nPATH = "{path}"\n' + WRK_SCRIPT)
    argv = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(script), url]
    started = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    elapsed = time.time() - started
    latency = {m.group(1): m.group(2) for m in re.finditer(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"elapsed": elapsed, "client_latency": latency, "non_2xx_3xx": int(non.group(1)) if non else 0,
            "socket_errors": errors.group(1) if errors else None, "raw": out}


def load_python(url, path, token, types, seconds, concurrency) -> dict:
    stop = time.time() + seconds
    lat, statuses, lock = [], Counter(), threading.Lock()

    def client(tid: int):
        session = requests.Session()
        n = 0
        while time.time() < stop:
            n += 1
            form = checkout_form(types, n, prefix=f"{tid}x")
            form["form_token"] = token
            t = time.perf_counter()
            try:
                r = session.post(url + path, data=form, allow_redirects=False, timeout=30,
                                 headers={"X-Forwarded-For": f"{10 + tid % 200}.{n // 250 % 250}.{n % 250}.1"})
                code = r.status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            with lock:
                lat.append(time.perf_counter() - t)
                statuses[code] += 1

    started = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"elapsed": time.time() - started, "statuses": dict(statuses),
            "client_latency": {"50": f"{percentile(lat, 50) * 1000:.1f}ms", "90": f"{percentile(lat, 90) * 1000:.1f}ms",
                               "99": f"{percentile(lat, 99) * 1000:.1f}ms"}}


def cpu_meter(stack: Stack, gun: Gunicorn) -> CpuMeter:
    groups = {"gunicorn": lambda: [gun.proc.pid], "sync worker": lambda: [p.pid for p in stack.workers],
              "sandbox": lambda: [stack.sandbox.proc.pid], "redis": lambda: [stack.redis.proc.pid]}
    if stack.db_label == "PostgreSQL":
        groups["postgres (all backends)"] = lambda: pids_named("postgres:")
    return CpuMeter(groups)


def latency_under_load(stack: Stack, since_id: int, timeout: float = 150.0) -> str:
    """Wait for the sync worker to catch up, then: outbox created_at -> sent_at of the Placed Order events of
    the orders placed during the load (purchase -> accepted by Klaviyo, under checkout load)."""
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import OutboxEvent

    started = time.time()
    with stack.app.app_context():
        while time.time() - started < timeout:
            left = db.session.scalar(select(func.count()).select_from(OutboxEvent)
                                     .where(OutboxEvent.id > since_id, OutboxEvent.status != "sent"))
            db.session.remove()
            if not left:
                break
            time.sleep(0.5)
        rows = db.session.execute(select(OutboxEvent.created_at, OutboxEvent.sent_at, OutboxEvent.attempts).where(
            OutboxEvent.id > since_id, OutboxEvent.metric == "Placed Order")).all()
        db.session.remove()
    done = [(sent - created).total_seconds() for created, sent, _ in rows if sent is not None]
    retried = sum(1 for *_, attempts in rows if attempts > 1)
    caught_up = time.time() - started
    if not done:
        return "no Placed Order sent", caught_up
    return (f"purchase -> Placed Order accepted, for orders placed during the load (outbox created_at -> sent_at): "
            f"{summary_ms(done)}; {len(rows) - len(done)} not sent; {retried} needed a retry; the worker caught up "
            f"{caught_up:.1f} s after the load ended"), caught_up


def max_outbox_id(stack: Stack) -> int:
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import OutboxEvent

    with stack.app.app_context():
        value = db.session.scalar(select(func.max(OutboxEvent.id))) or 0
        db.session.remove()
    return value


def waiting_since(stack: Stack, first_id: int) -> int:
    """Outbox rows written after first_id that Klaviyo has not accepted yet."""
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import OutboxEvent

    with stack.app.app_context():
        value = db.session.scalar(select(func.count()).select_from(OutboxEvent)
                                  .where(OutboxEvent.id > first_id, OutboxEvent.status != "sent"))
        db.session.remove()
    return value


def counts(stack: Stack) -> tuple[int, int, int]:
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.orders.models import Order
    from portal.sync.models import OutboxEvent

    with stack.app.app_context():
        orders = db.session.scalar(select(func.count()).select_from(Order))
        rows = db.session.scalar(select(func.count()).select_from(OutboxEvent))
        sent = db.session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status == "sent"))
        db.session.remove()
    return orders, rows, sent


def integrations_latency(gun: Gunicorn, n: int) -> dict:
    """A logged-in organizer loads the Integrations page (and View Details) n times, one after another."""
    session = requests.Session()
    html = session.get(f"{gun.url}/auth/login", timeout=10).text
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    r = session.post(f"{gun.url}/auth/login", data={"csrf_token": csrf, "email": EMAIL, "password": PASSWORD},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.status_code
    out = {}
    for label, path in (("integrations", "/manage/integrations/"), ("details", "/manage/integrations/klaviyo")):
        for _ in range(10):  # warm-up
            session.get(gun.url + path, timeout=10)
        gun.clear_log()
        client = []
        for _ in range(n):
            t = time.perf_counter()
            resp = session.get(gun.url + path, timeout=10)
            client.append(time.perf_counter() - t)
            assert resp.status_code == 200, resp.status_code
        time.sleep(0.3)
        server = gun.server_times(path)
        out[label] = {"client": client, "server": server, "bytes": len(resp.content)}
    return out


def count_statements(stack: Stack, client, event_public_id: str, types: list[int], token: str) -> str:
    """The SQL statements of one 2-ticket checkout and of one 3-ticket (2 types) checkout, as the database sees
    them (commits included), through the app in-process."""
    from sqlalchemy import event as sa_event

    from portal.extensions import db

    seen: list[str] = []
    lines = []
    with stack.app.app_context():
        engine = db.engine

    def listen(_conn, _cursor, statement, *_args):
        seen.append(" ".join(statement.split())[:90])

    def on_commit(_conn):
        seen.append("COMMIT")

    sa_event.listen(engine, "before_cursor_execute", listen)
    sa_event.listen(engine, "commit", on_commit)
    try:
        for n, label in ((0, "2 tickets, 1 type"), (3, "3 tickets, 2 types")):
            seen.clear()
            form = checkout_form(types, 800_000 + n)
            form["form_token"] = token
            response = client.post(f"/e/{event_public_id}/checkout", data=form)
            assert response.status_code == 303, response.status_code
            lines.append(f"  SQL per checkout ({label}): {len(seen)}")
            lines += [f"    {text}" for text in seen]
    finally:
        sa_event.remove(engine, "before_cursor_execute", listen)
        sa_event.remove(engine, "commit", on_commit)
    return "\n".join(lines)


def profile_checkouts(stack: Stack, event_public_id: str, types: list[int], count: int) -> str:
    """pyinstrument over `count` checkout POSTs through the app in-process (Flask test client)."""
    from pyinstrument import Profiler

    # The same allowance as under gunicorn (see Gunicorn.__enter__): many buyers, one page's form token.
    stack.app.config.update(FORM_TOKEN_MAX_ORDERS=100_000_000, CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE=100_000_000)
    client = stack.app.test_client()
    html = client.get(f"/e/{event_public_id}").get_data(as_text=True)
    token = re.search(r'name="form_token" value="([^"]+)"', html).group(1)
    statements = count_statements(stack, client, event_public_id, types, token)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for i in range(count):
        form = checkout_form(types, 900_000 + i)
        form["form_token"] = token
        response = client.post(f"/e/{event_public_id}/checkout", data=form)
        assert response.status_code == 303, response.status_code
    profiler.stop()
    print(statements)
    text = profiler.output_text(unicode=False, color=False)
    out = Path("/tmp/bench-profiles")
    out.mkdir(exist_ok=True)
    path = out / f"checkout-{stack.db_label.lower()}.txt"
    path.write_text(text)
    return f"{path}\n{text}"


def measure(args, client_kind: str) -> dict:
    """One full run of this tree: every config, then the pages. Returns the figures (printed as it goes)."""
    out = {"machine": machine(), "configs": []}
    with Stack("checkout", args.database_url, keep=args.keep) as stack:
        out["database"] = stack.db_label
        organizer_id = stack.connect(EMAIL)
        event_id = stack.make_event(organizer_id, capacity=10_000_000)
        from portal.events.models import Event
        from portal.extensions import db

        with stack.app.app_context():
            public_id = db.session.get(Event, event_id).public_id
            types = [t.id for t in db.session.get(Event, event_id).ticket_types]
            db.session.remove()
        print(f"=== checkout: {stack.db_label}, client {client_kind}, {args.concurrency} connections, "
              f"{args.seconds} s per config, sync worker {'off' if args.no_worker else 'on'}; tmp {stack.tmp}")
        if args.profile:
            print(f"[profile] {args.profile} checkouts in-process (Flask test client, no gunicorn):")
            started = time.perf_counter()
            text = profile_checkouts(stack, public_id, types, args.profile)
            print(f"  {args.profile / (time.perf_counter() - started):.0f} checkouts/s under the profiler; -> {text.splitlines()[0]}")
            print("\n".join("    " + line for line in text.splitlines()[1:70]))
        if not args.no_worker:
            stack.start_workers(1)
        if args.preload:
            from bench.onsale import place_orders

            started = time.time()
            place_orders(stack, organizer_id, event_id, args.preload)
            first = max_outbox_id(stack)
            if not args.no_worker:
                latency_under_load(stack, 0, timeout=600)
            print(f"[preload] {args.preload:,} orders placed (outbox up to id {first:,}) and sent in "
                  f"{time.time() - started:.0f} s")
        for config in args.configs.split(","):
            w, t = (int(x) for x in config.lower().split("x"))
            with Gunicorn(stack, w, t) as gun:
                token, page_types = page_form(f"{gun.url}/e/{public_id}")
                assert page_types == types, (page_types, types)
                path = f"/e/{public_id}/checkout"
                print(f"\n[{config}] {wait_for_quiet()}", flush=True)
                orders0, rows0, sent0 = counts(stack)
                first_id = max_outbox_id(stack)
                api0 = stack.sandbox.stats()
                gun.clear_log()
                with cpu_meter(stack, gun) as cpu:
                    if client_kind == "wrk":
                        load = load_wrk(stack, gun.url, path, token, types, args.seconds, args.concurrency,
                                        args.wrk_threads)
                    else:
                        load = load_python(gun.url, path, token, types, args.seconds, args.concurrency)
                ended = time.time()
                orders1, rows1, sent1 = counts(stack)
                backlog = waiting_since(stack, first_id)  # written during the load, not yet accepted when it ended
                api1 = stack.sandbox.stats()
                statuses = gun.statuses(path, "POST")
                server = gun.server_times(path, "POST")
                orders = orders1 - orders0
                rate = orders / load["elapsed"]
                figures = {"config": config, "orders": orders, "orders_per_s": rate, "statuses": dict(statuses),
                           "server_p50_ms": percentile(server, 50) * 1000, "server_p99_ms": percentile(server, 99) * 1000,
                           "client_latency": load["client_latency"], "cpu": cpu.cores, "machine_busy": cpu.machine,
                           "rows_per_order": (rows1 - rows0) / max(orders, 1)}
                print(f"\n--- gunicorn -w {w} --threads {t} ({'gthread' if t > 1 else 'sync'}), {stack.db_label}")
                print(f"  checkout: {orders:,} orders in {load['elapsed']:.1f} s = {rate:.1f} orders/s; responses "
                      f"{dict(statuses)}; outbox rows written {rows1 - rows0:,} ({figures['rows_per_order']:.2f}/order)")
                if server:
                    print(f"  checkout POST server time: {summary_ms(server)}")
                print(f"  client latency: {load['client_latency']}"
                      + (f"; socket errors {load['socket_errors']}" if load.get("socket_errors") else ""))
                print(f"  {cpu.report()}")
                print("  CPU per order: " + ", ".join(f"{name} {cores / max(rate, 1e-9) * 1000:.2f} ms"
                                                      for name, cores in cpu.cores.items()
                                                      if cores >= 0.005 and name != "other processes on the machine"))
                if not args.no_worker:
                    calls = {path: sum(api1["requests"]["by_path"].get(path, {}).values())
                             - sum(api0["requests"]["by_path"].get(path, {}).values())
                             for path in ("/api/events", "/api/event-bulk-create-jobs")}
                    bulk = calls["/api/event-bulk-create-jobs"]
                    figures.update({"single_calls": calls["/api/events"], "bulk_calls": bulk,
                                    "throttled_429": api1["throttled_429"] - api0["throttled_429"],
                                    "events_accepted_during_load": sent1 - sent0, "backlog_at_end": backlog})
                    print(f"  sync worker meanwhile: {sent1 - sent0:,} events accepted ({(sent1 - sent0) / load['elapsed']:.0f}/s); "
                          f"Create Event calls {calls['/api/events']:,}, Bulk Create calls {bulk:,} "
                          f"({bulk / load['elapsed'] * 60:.0f}/min), 429s {figures['throttled_429']}; "
                          f"{backlog:,} events waiting when the load ended")
                    text, caught_up = latency_under_load(stack, first_id)
                    _, floor = bulk_floor_seconds(max(backlog, 1))
                    api2 = stack.sandbox.stats()
                    orders2, rows2, sent2 = counts(stack)
                    lost = (rows2 - rows0) - (sent2 - sent0)
                    figures.update({"latency": text, "drained_after_s": caught_up, "drain_floor_s": floor,
                                    "lost": lost, "accepted_by_sandbox": api2["accepted"]["total"] - api0["accepted"]["total"],
                                    "duplicates_ignored": api2["duplicates_ignored"] - api0["duplicates_ignored"]})
                    print(f"  {text}")
                    print(f"  after the load: the {backlog:,} waiting events were accepted {caught_up:.1f} s later "
                          f"(Klaviyo's floor for them {floor:.0f} s); not sent {lost}; Klaviyo saw "
                          f"{figures['accepted_by_sandbox']:,} events for {rows2 - rows0:,} rows, repeats it ignored "
                          f"{figures['duplicates_ignored']}")
                pages = integrations_latency(gun, args.integrations)
                for label, data in pages.items():
                    server_p50 = percentile(data["server"], 50) * 1000
                    client_p50 = percentile(data["client"], 50) * 1000
                    overhead = 1 - statistics.fmean(data["server"]) / statistics.fmean(data["client"])
                    name = "Integrations page /manage/integrations/" if label == "integrations" else "View Details /manage/integrations/klaviyo"
                    print(f"  {name} ({data['bytes']:,} bytes, after {orders1:,} orders):")
                    print(f"    server {summary_ms(data['server'])}")
                    print(f"    client {summary_ms(data['client'])}")
                    print(f"    network/client overhead: {client_p50 - server_p50:.1f} ms at p50 = {overhead:.0%} of mean client time")
                    figures[f"{label}_p50_ms"] = server_p50
                figures["orders_in_db"] = orders1
                out["configs"].append(figures)
        if not args.no_worker:
            memory = stack.worker_memory()
            stack.stop_workers()
            out["worker_vmhwm_mb"] = memory[0].get("VmHWM", 0)
            print(f"\nsync worker during the load: VmHWM {out['worker_vmhwm_mb']:.1f} MB")
    return out


def run_commit(rev: str, args) -> dict:
    """The same benchmark on another commit (bench.harness.run_on_commit), in its own process, after this one."""
    options = ["--configs", args.configs, "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
               "--client", args.client, "--integrations", str(args.integrations), "--preload", str(args.preload)]
    return run_on_commit("bench.checkout", rev, options + (["--no-worker"] if args.no_worker else []),
                         args.database_url, timeout=args.seconds * 20 + 1800)


def side_by_side(label_a: str, a: dict, label_b: str, b: dict | None) -> None:
    print(f"\n=== summary ({a['database']}; {a['machine']})")
    rows = [("orders/s", "orders_per_s", "{:.1f}"), ("server p50 ms", "server_p50_ms", "{:.1f}"),
            ("server p99 ms", "server_p99_ms", "{:.1f}"), ("gunicorn CPU ms/order", "gunicorn_ms", "{:.2f}"),
            ("database CPU ms/order", "database_ms", "{:.2f}"), ("worker CPU ms/order", "worker_ms", "{:.2f}"),
            ("other load (cores)", "other", "{:.2f}"), ("Bulk calls", "bulk_calls", "{}"),
            ("single calls", "single_calls", "{}"), ("429s", "throttled_429", "{}"),
            ("waiting at the end", "backlog_at_end", "{}"), ("drained after s", "drained_after_s", "{:.1f}"),
            ("floor s", "drain_floor_s", "{:.0f}"), ("not sent", "lost", "{}"),
            ("repeats ignored", "duplicates_ignored", "{}"), ("Integrations p50 ms", "integrations_p50_ms", "{:.1f}"),
            ("View Details p50 ms", "details_p50_ms", "{:.1f}")]

    def derived(figures: dict) -> dict:
        rate = max(figures["orders_per_s"], 1e-9)
        cpu = figures["cpu"]
        return {**figures, "gunicorn_ms": cpu.get("gunicorn", 0) / rate * 1000,
                "database_ms": cpu.get("postgres (all backends)", 0) / rate * 1000,
                "worker_ms": cpu.get("sync worker", 0) / rate * 1000,
                "other": cpu.get("other processes on the machine", 0)}

    others = {c["config"]: derived(c) for c in (b or {}).get("configs", [])}
    header = f"{'':>24}" + "".join(f"{c['config'] + ' ' + label_a:>18}" + (f"{c['config'] + ' ' + label_b:>18}" if b else "")
                                   for c in a["configs"])
    print(header)
    for title, key, fmt in rows:
        line = f"{title:>24}"
        for c in a["configs"]:
            mine = derived(c)
            line += f"{fmt.format(mine[key]) if key in mine else '-':>18}"
            if b:
                theirs = others.get(c["config"], {})
                line += f"{fmt.format(theirs[key]) if key in theirs else '-':>18}"
        print(line)
    print(f"{'worker VmHWM MB':>24}{a.get('worker_vmhwm_mb', 0):>18.1f}"
          + (f"{b.get('worker_vmhwm_mb', 0):>18.1f}" if b else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="default: SQLite in the temp dir")
    parser.add_argument("--configs", default="2x4", help="gunicorn WORKERSxTHREADS, comma-separated")
    parser.add_argument("--seconds", type=int, default=15, help="load duration per config")
    parser.add_argument("--concurrency", type=int, default=16, help="client connections")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--integrations", type=int, default=300, help="Integrations page loads to time")
    parser.add_argument("--no-worker", action="store_true", help="do not run the sync worker during the load")
    parser.add_argument("--profile", type=int, default=0, help="pyinstrument over N in-process checkouts first")
    parser.add_argument("--preload", type=int, default=0,
                        help="place this many orders (place_order) and let the worker send them before the load, "
                             "so the pages are timed over a realistic outbox (e.g. 10000 -> 42,500 events)")
    parser.add_argument("--compare", default="HEAD~1",
                        help="also run the same benchmark on this commit, after this tree, and print both side by "
                             "side ('none' to skip)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    client_kind = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    print(f"machine: {machine()}; load average {loadavg()}")
    here = measure(args, client_kind)
    other = None
    if args.compare != "none":
        sha = subprocess.run(["git", "rev-parse", "--short", args.compare], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        print(f"\n=== the same on {args.compare} ({sha}), exported with bench/snapshot.sh ...", flush=True)
        other = run_commit(args.compare, args)
        side_by_side("tree", here, sha, other)
    else:
        side_by_side("tree", here, "", None)
    if args.json:
        print(json.dumps(here))
    return 0


if __name__ == "__main__":
    sys.exit(main())
