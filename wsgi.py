"""The WSGI entry point: gunicorn wsgi:app."""
import sys

from portal import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:  # one line that says what to set, not a traceback
    print(f"The portal cannot start: {exc}", file=sys.stderr)
    sys.exit(1)
