"""The Klaviyo sandbox: a local, strict stand-in for Klaviyo's OAuth and event API.

``create_sandbox_app(config)`` builds its Flask app; ``python -m portal.sandbox`` runs it;
``portal.sandbox.server.start_in_thread(config)`` runs it on a free port for tests.
"""

from portal.sandbox.app import create_sandbox_app

__all__ = ["create_sandbox_app"]
