"""The WSGI entry point: gunicorn wsgi:app."""
import sys

from portal import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:  # one line that says what to set, not a traceback
    print(f"The portal cannot start: {exc}", file=sys.stderr)
    # Under gunicorn, 4 is its "app failed to load": the master then stops instead of booting workers again and
    # again. With --preload (as the README runs it) the line is printed once, by the master, before any worker.
    sys.exit(4 if "gunicorn" in sys.modules else 1)
