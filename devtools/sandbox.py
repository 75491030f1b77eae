"""The Klaviyo sandbox in a process of its own, with any settings, quiet, until SIGTERM or Ctrl-C:

    python -m devtools.sandbox --port 8025 --settings '{"SANDBOX_DB": "/tmp/x/sandbox.db"}'

The benchmarks start it through devtools.processes.start_sandbox_process, so that their own polling and the
SDK baseline never share a GIL with it. It prints "READY <url>" once it listens.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--settings", type=json.loads, default={}, help="the sandbox's settings, as JSON")
    args = parser.parse_args(argv)

    from portal.sandbox.guard import require_loopback
    from portal.sandbox.server import start_in_thread

    if require_loopback(args.host):
        parser.error(require_loopback(args.host))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = start_in_thread(args.settings, host=args.host, port=args.port)
    print(f"READY {server.url}", flush=True)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
