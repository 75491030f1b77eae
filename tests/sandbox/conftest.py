"""Fixtures for the Klaviyo sandbox tests: an app on a temporary database and an OAuth helper."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from portal.sandbox import create_sandbox_app
from tests.sandbox.helpers import SAMPLE_EVENT, OAuthFlow, api_headers


@pytest.fixture
def db_path(database_dir):
    """A new database file for each test, where tests/conftest.py keeps its databases (in memory if it can)."""
    directory = tempfile.mkdtemp(dir=database_dir)
    yield os.path.join(directory, "sandbox.db")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def make_app(db_path):
    def make(**config):
        return create_sandbox_app({"SANDBOX_DB": db_path, "SANDBOX_FAULT_SEED": 7, **config})
    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def oauth(client):
    return OAuthFlow(client)


@pytest.fixture
def token(oauth) -> str:
    """A fresh access token with accounts:read and events:write."""
    return oauth.connect()["access_token"]


@pytest.fixture
def post_event(client, token):
    """POST a JSON:API body; ``headers`` entries override the defaults (None removes one)."""
    def post(body=None, path="/api/events", access_token=None, headers=None):
        merged = api_headers(access_token or token)
        merged.update(headers or {})
        merged = {k: v for k, v in merged.items() if v is not None}
        payload = body if isinstance(body, (str, bytes)) else json.dumps(SAMPLE_EVENT if body is None else body)
        return client.post(path, data=payload, headers=merged)
    return post
