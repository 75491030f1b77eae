"""Run the Klaviyo sandbox: ``python -m portal.sandbox --host 127.0.0.1 --port 8025``."""

from __future__ import annotations

import argparse

from werkzeug.serving import run_simple

from portal.sandbox import create_sandbox_app, guard
from portal.sandbox.settings import DEFAULTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m portal.sandbox",
                                     description="Run the local Klaviyo sandbox.")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (the sandbox has no login)")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--db", help="SQLite file for the sandbox's state (default instance/sandbox.db)")
    parser.add_argument("--redirect-uri", action="append", default=[],
                        help="register an extra OAuth redirect URI (repeatable)")
    args = parser.parse_args(argv)
    refused = guard.require_loopback(args.host)
    if refused:
        parser.error(refused)
    config = {}
    if args.db:
        config["SANDBOX_DB"] = args.db
    if args.redirect_uri:
        config["SANDBOX_REDIRECT_URIS"] = DEFAULTS["SANDBOX_REDIRECT_URIS"] + args.redirect_uri
    app = create_sandbox_app(config)
    print(f" * Klaviyo sandbox: received events at http://{args.host}:{args.port}/")
    print(f" * OAuth client_id={app.config['SANDBOX_CLIENT_ID']} db={app.config['SANDBOX_DB']}")
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False, use_debugger=False)


if __name__ == "__main__":
    main()
