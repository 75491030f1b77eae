"""gunicorn's configuration for the portal (gunicorn reads ./gunicorn.conf.py by itself): `gunicorn wsgi:app`.

Sized for a 2-core machine by bench/checkout.py (docs/benchmarks.md, "Checkout"): WEB_CONCURRENCY processes of
GUNICORN_THREADS threads each (the gthread worker). The checkout spends much of its time waiting for the database
and Redis, so a few threads per process keep the cores busy; more processes than cores only add contention for
the database. Each process keeps one database connection per thread (DATABASE_POOL_SIZE).
"""
import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
os.environ.setdefault("DATABASE_POOL_SIZE", str(threads))
backlog = 2048  # an on-sale's burst of connections waits in the queue instead of being refused
keepalive = 5  # the widget's htmx requests reuse their connection
timeout = 30
graceful_timeout = 20
