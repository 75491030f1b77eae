"""Sending an e-mail over SMTP, from the MAIL_URL setting (Python's own smtplib):

    smtp://host:25                          plain SMTP (a local relay, the development mail catcher)
    smtp://user:password@host:587?starttls=1   upgraded to TLS before logging in
    smtps://user:password@host:465          TLS from the start

Unset, nothing is sent (send() returns False): the portal still shows what it would have said.
"""
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

from flask import current_app


class MailError(Exception):
    """The mail server could not be reached or refused the message; the text says which."""


def configured() -> bool:
    return bool(current_app.config.get("MAIL_URL"))


def send(to: str, subject: str, body: str) -> bool:
    """Send one plain-text message. True when the server took it, False when no MAIL_URL is set."""
    url = current_app.config.get("MAIL_URL")
    if not url:
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise MailError("MAIL_URL must look like smtp://host:port or smtps://user:password@host:port, "
                        f"not {parts.scheme}://...")
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="ticketing.portal")
    message.set_content(body)
    timeout = 10
    try:
        if parts.scheme == "smtps":
            server = smtplib.SMTP_SSL(parts.hostname, parts.port or 465, timeout=timeout,
                                      context=ssl.create_default_context())
        else:
            server = smtplib.SMTP(parts.hostname, parts.port or 25, timeout=timeout)
        with server:
            if parts.scheme == "smtp" and parse_qs(parts.query).get("starttls") == ["1"]:
                server.starttls(context=ssl.create_default_context())
            if parts.username:
                server.login(unquote(parts.username), unquote(parts.password or ""))
            server.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    return True
