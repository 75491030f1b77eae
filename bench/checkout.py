"""Checkout throughput under gunicorn, from a load generator on loopback, with Klaviyo connected (so every
order writes its outbox rows) and a sync worker running; then the Integrations page's latency, logged in.

    .venv/bin/python -m bench.checkout                                  # SQLite, gunicorn 2x4 and 4x1, wrk
    .venv/bin/python -m bench.checkout --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python -m bench.checkout --configs 2x4,3x1 --seconds 20 --concurrency 16 --client python
    .venv/bin/python -m bench.checkout --profile 300     # also pyinstrument over 300 in-process checkouts

--configs is a list of WORKERSxTHREADS for gunicorn (threads > 1 uses the gthread worker class, else sync).
The load generator posts the real Event Page checkout form (with the signed form_token read from the event
page once per client, as a browser that loaded the page would) for a typical purchase: the buyer's ticket
plus a guest's (every fourth order a third, VIP, ticket). It does not follow the 303 to the confirmation page.
orders/s counts orders committed in the database during the run. Server time of the Integrations page is
gunicorn's own request time (%(D)s in its access log); the rest of the client-measured time is the client
and the network (loopback) overhead.

Targets (issue 5): checkout >= 150 orders/s; Integrations page p50 <= 15 ms server time.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench.harness import (  # noqa: E402
    PASSWORD, CpuMeter, Stack, checkout_form, pids_named, wait_for_quiet, free_port, loadavg, machine, percentile, summary_ms,
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
  local buyer = "198.18." .. tostring(tid % 250) .. "." .. tostring(n % 250)
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
                                 headers={"X-Forwarded-For": f"198.18.{tid % 250}.{n % 250}"})
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
        return "no Placed Order sent"
    return (f"purchase -> Placed Order accepted, for orders placed during the load (outbox created_at -> sent_at): "
            f"{summary_ms(done)}; {len(rows) - len(done)} not sent; {retried} needed a retry; the worker caught up "
            f"{caught_up:.1f} s after the load ended")


def max_outbox_id(stack: Stack) -> int:
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import OutboxEvent

    with stack.app.app_context():
        value = db.session.scalar(select(func.max(OutboxEvent.id))) or 0
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


def profile_checkouts(stack: Stack, event_public_id: str, types: list[int], count: int) -> str:
    """pyinstrument over `count` checkout POSTs through the app in-process (Flask test client)."""
    from pyinstrument import Profiler

    client = stack.app.test_client()
    html = client.get(f"/e/{event_public_id}").get_data(as_text=True)
    token = re.search(r'name="form_token" value="([^"]+)"', html).group(1)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for i in range(count):
        form = checkout_form(types, 900_000 + i)
        form["form_token"] = token
        response = client.post(f"/e/{event_public_id}/checkout", data=form)
        assert response.status_code == 303, response.status_code
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False)
    out = Path("/tmp/bench-profiles")
    out.mkdir(exist_ok=True)
    path = out / f"checkout-{stack.db_label.lower()}.txt"
    path.write_text(text)
    return f"{path}\n{text}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="default: SQLite in the temp dir")
    parser.add_argument("--configs", default="2x4,4x1", help="gunicorn WORKERSxTHREADS, comma-separated")
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
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    client_kind = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    print(f"machine: {machine()}; load average {loadavg()}")

    with Stack("checkout", args.database_url, keep=args.keep) as stack:
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
        results = []
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
                time.sleep(0.5)
                orders1, rows1, sent1 = counts(stack)
                api1 = stack.sandbox.stats()
                statuses = gun.statuses(path, "POST")
                server = gun.server_times(path, "POST")
                orders = orders1 - orders0
                rate = orders / load["elapsed"]
                print(f"\n--- gunicorn -w {w} --threads {t} ({'gthread' if t > 1 else 'sync'}), {stack.db_label}")
                print(f"  checkout: {orders:,} orders in {load['elapsed']:.1f} s = {rate:.1f} orders/s "
                      f"(target >= 150: {'MET' if rate >= 150 else 'MISSED'}); responses {dict(statuses)}; "
                      f"outbox rows written {rows1 - rows0:,} ({(rows1 - rows0) / max(orders, 1):.2f}/order)")
                if server:
                    print(f"  checkout POST server time: {summary_ms(server)}")
                print(f"  client latency: {load['client_latency']}"
                      + (f"; socket errors {load['socket_errors']}" if load.get("socket_errors") else ""))
                print(f"  {cpu.report()}")
                if not args.no_worker:
                    calls = {path: sum(api1["requests"]["by_path"].get(path, {}).values())
                             - sum(api0["requests"]["by_path"].get(path, {}).values())
                             for path in ("/api/events", "/api/event-bulk-create-jobs")}
                    print(f"  sync worker meanwhile: {sent1 - sent0:,} events accepted ({(sent1 - sent0) / load['elapsed']:.0f}/s); "
                          f"Create Event calls {calls['/api/events']:,}, Bulk Create calls {calls['/api/event-bulk-create-jobs']:,}, "
                          f"429s {api1['throttled_429'] - api0['throttled_429']}")
                if not args.no_worker:
                    print(f"  {latency_under_load(stack, first_id)}", flush=True)
                pages = integrations_latency(gun, args.integrations)
                for label, data in pages.items():
                    server_p50 = percentile(data["server"], 50) * 1000
                    client_p50 = percentile(data["client"], 50) * 1000
                    overhead = 1 - statistics.fmean(data["server"]) / statistics.fmean(data["client"])
                    name = "Integrations page /manage/integrations/" if label == "integrations" else "View Details /manage/integrations/klaviyo"
                    print(f"  {name} ({data['bytes']:,} bytes, after {orders1:,} orders):")
                    print(f"    server {summary_ms(data['server'])}")
                    print(f"    client {summary_ms(data['client'])}")
                    print(f"    network/client overhead: {client_p50 - server_p50:.1f} ms at p50 = {overhead:.0%} of mean client time"
                          + (f"  (target p50 <= 15 ms server: {'MET' if server_p50 <= 15 else 'MISSED'})" if label == "integrations" else ""))
                results.append((config, rate, orders, percentile(pages["integrations"]["server"], 50) * 1000,
                                percentile(pages["integrations"]["server"], 99) * 1000,
                                percentile(pages["integrations"]["client"], 50) * 1000))
        if not args.no_worker:
            memory = stack.worker_memory()
            stack.stop_workers()
            print(f"\nsync worker during the load: VmHWM {memory[0].get('VmHWM', 0):.1f} MB")
    print(f"\n=== summary ({stack.db_label}, client {client_kind}, {args.concurrency} connections)")
    print(f"{'gunicorn':>9} {'orders/s':>9} {'orders':>7} {'integ. p50 srv':>15} {'p99 srv':>8} {'p50 client':>11}")
    for config, rate, orders, p50, p99, c50 in results:
        print(f"{config:>9} {rate:>9.1f} {orders:>7} {p50:>12.1f} ms {p99:>5.1f} ms {c50:>8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
