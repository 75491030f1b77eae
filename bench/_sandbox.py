"""Run the Klaviyo sandbox in its own process for the benchmarks (quiet, threaded, real rate limits on).

    python -m bench._sandbox --port 8025 --db /tmp/x/sandbox.db --redirect-uri http://localhost/...

A separate process, so that the benchmark's own polling and the SDK baseline never share a GIL with it.
It prints "READY <url>" once it listens, and runs until SIGTERM.
"""
import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Two Klaviyo accounts: one for our portal's organizer, one for the SDK baseline, so that the baseline's
# events neither share a rate-limit bucket nor collide with ours in the sandbox's dedup.
ACCOUNTS = [
    {"id": "SBX01HXYZ", "organization_name": "Sandbox Festival Co.", "public_api_key": "SbX123"},
    {"id": "SBX02BASE", "organization_name": "Baseline Loop Co.", "public_api_key": "SbX456"},
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", required=True)
    parser.add_argument("--redirect-uri", action="append", default=[])
    args = parser.parse_args(argv)

    from portal.sandbox.server import start_in_thread

    server = start_in_thread({"SANDBOX_DB": args.db, "SANDBOX_REDIRECT_URIS": args.redirect_uri,
                              "SANDBOX_ACCOUNTS": ACCOUNTS, "SANDBOX_ENFORCE_RATE_LIMITS": True},
                             host=args.host, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {server.url}", flush=True)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
