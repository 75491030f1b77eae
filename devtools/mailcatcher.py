"""A local mail catcher for development and tests: an SMTP server (aiosmtpd) that keeps every message it is sent,
and a page that lists them, the way the Klaviyo sandbox lists the events it received.

    python -m devtools.mailcatcher --smtp-port 8026 --web-port 8027     # what ./scripts/run starts
    catcher = MailCatcher().start(); ...; catcher.messages(); catcher.stop()   # in the tests

Nothing is ever delivered anywhere: the messages stay in memory until the process ends.
"""
from __future__ import annotations

import argparse
import html
import json
import signal
import sys
import threading
import time
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devtools import processes
from portal.sandbox.server import QuietHandler


class _Handler:
    def __init__(self, catcher: MailCatcher):
        self.catcher = catcher

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.catcher._keep(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content)
        return "250 Message accepted (caught locally, not delivered)"


class MailCatcher:
    """An SMTP server on 127.0.0.1 that keeps what it receives, plus (optionally) a web page listing it."""

    def __init__(self, host: str = "127.0.0.1", smtp_port: int = 0, web_port: int | None = None):
        self.host = host
        self.smtp_port = smtp_port or processes.free_port(host)
        self.web_port = web_port
        self._messages: list[dict] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._web = None

    @property
    def url(self) -> str:
        """The MAIL_URL that sends here."""
        return f"smtp://{self.host}:{self.smtp_port}"

    @property
    def page_url(self) -> str | None:
        return f"http://{self.host}:{self.web_port}/" if self.web_port is not None else None

    def start(self) -> MailCatcher:
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.smtp_port)
        self._controller.start()
        if self.web_port is not None:
            self._web = make_server(self.host, self.web_port, self._page, threaded=True, request_handler=QuietHandler)
            self.web_port = self._web.server_port
            threading.Thread(target=self._web.serve_forever, name="mail-catcher-page", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
        if self._web is not None:
            self._web.shutdown()
            self._web.server_close()

    def _keep(self, sender: str, recipients: list[str], raw: bytes) -> None:
        parsed = message_from_bytes(raw, policy=policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        with self._lock:
            self._messages.append({"id": len(self._messages) + 1, "at": time.time(), "from": sender,
                                   "to": recipients, "subject": str(parsed.get("Subject", "")),
                                   "body": body.get_content().replace("\r\n", "\n") if body is not None else ""})

    def messages(self, to: str | None = None) -> list[dict]:
        """What was caught, oldest first (only what was sent to `to`, when given)."""
        with self._lock:
            return [dict(m) for m in self._messages if to is None or to in m["to"]]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    # --- the page --------------------------------------------------------------------------------------------

    def _page(self, environ, start_response):
        request = Request(environ)
        if request.path == "/messages.json":
            response = Response(json.dumps({"messages": self.messages()}), mimetype="application/json")
        elif request.path == "/":
            response = Response(self._html(), mimetype="text/html")
            response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        else:
            response = Response("Not found", status=404)
        return response(environ, start_response)

    def _html(self) -> str:
        items = "".join(
            f"<article><h2>{html.escape(m['subject'])}</h2><p class=meta>"
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(m['at']))} UTC · from {html.escape(m['from'])} · "
            f"to {html.escape(', '.join(m['to']))}</p><pre>{html.escape(m['body'])}</pre></article>"
            for m in reversed(self.messages())) or "<p class=meta>Nothing caught yet.</p>"
        return ("<!doctype html><html lang=en><meta charset=utf-8><title>Caught mail</title><style>"
                "body{font:15px/1.5 system-ui,sans-serif;max-width:900px;margin:2rem auto;padding:0 1rem;color:#1b1f24}"
                "article{border:1px solid #e3e6ea;border-radius:10px;padding:.5rem 1rem;margin:1rem 0}"
                "h2{font-size:1.05rem;margin:.5rem 0}.meta{color:#5d6670;font-size:.85rem}"
                "pre{white-space:pre-wrap;font:13px/1.45 ui-monospace,monospace}</style>"
                f"<h1>Caught mail</h1><p class=meta>SMTP on {self.host}:{self.smtp_port}. Messages sent here are kept "
                f"in memory and never delivered. Newest first.</p>{items}</html>")


def setup(supervisor, env: dict) -> str:
    """For the run command: use MAIL_URL when set; else start a catcher and point the portal and worker at it.
    Returns a line saying which."""
    if env.get("MAIL_URL"):
        return "MAIL_URL (alerts go to the real mail server)"
    smtp_port, web_port = processes.free_port(), processes.free_port()
    supervisor.start("mail", [sys.executable, "-m", "devtools.mailcatcher", "--smtp-port", str(smtp_port),
                              "--web-port", str(web_port)], env)
    supervisor.wait_for(lambda: processes.port_open(smtp_port) and processes.port_open(web_port), 15,
                        "the mail catcher to listen")
    env.update(MAIL_URL=f"smtp://127.0.0.1:{smtp_port}", MAIL_CATCHER_URL=f"http://127.0.0.1:{web_port}/")
    return f"caught locally (nothing is delivered), listed at {env['MAIL_CATCHER_URL']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.mailcatcher", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=8026)
    parser.add_argument("--web-port", type=int, default=8027)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    catcher = MailCatcher(args.host, args.smtp_port, args.web_port).start()
    print(f"READY smtp {catcher.url} page {catcher.page_url}", flush=True)
    stop.wait()
    catcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
