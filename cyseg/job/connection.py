"""Talking to the Cytomine server: timeouts, retries, and errors that name the server and the action.

The 2.4.1 client sends requests without a timeout (a server that stops answering would hang
the job forever), never retries, and reports most failures by returning False. `harden` gives its
session a default timeout and network retries for idempotent requests; `call` turns a False result
or a network error into a `ServerError` that says what was being done; `get_bytes` fetches a
picture into memory (the client only offers downloads to files).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypeVar

import requests
from cytomine import Cytomine
from requests.adapters import HTTPAdapter, Retry

from cyseg.errors import CysegError

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
POOL_SIZE = 32  # connections per host: prefetch threads and the uploader share the session
NETWORK_RETRIES = 3  # for idempotent requests (GET, PUT, DELETE); uploads (POST) retry in upload.py
RETRY_BACKOFF_S = 0.2


class ServerError(CysegError):
    """The Cytomine server failed or stopped answering."""


class _TimeoutAdapter(HTTPAdapter):
    """An adapter that applies a default timeout to requests sent without one, and retries
    idempotent requests that fail to connect, lose their connection (a server closing an idle
    keep-alive connection just as it is reused is routine, not a failure) or meet a busy gateway."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        retries = Retry(total=NETWORK_RETRIES, backoff_factor=RETRY_BACKOFF_S, status_forcelist=(502, 503, 504),
                        allowed_methods=Retry.DEFAULT_ALLOWED_METHODS, raise_on_status=False)
        super().__init__(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE, max_retries=retries)
        self.timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def harden(client: Cytomine, connect_s: float = CONNECT_TIMEOUT_S, read_s: float = READ_TIMEOUT_S) -> None:
    """Give the client's session default timeouts and retries (this replaces the client's HTTP cache
    adapter, which a job does not need: it reads each tile once)."""
    adapter = _TimeoutAdapter((connect_s, read_s))
    client._session.mount("http://", adapter)
    client._session.mount("https://", adapter)


def host() -> str:
    """The server the client talks to (for messages)."""
    try:
        return Cytomine.get_instance()._base_url(with_base_path=False)
    except ConnectionError:  # no client yet
        return "(not connected)"


def describe(error: Exception) -> str:
    """A network error in a few words."""
    if isinstance(error, requests.Timeout):
        return "it stopped answering (timed out)"
    if isinstance(error, requests.ConnectionError):
        return "it cannot be reached (connection failed)"
    return f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}".rstrip(": ")


def call(action: str, function: Callable[[], T], attempts: int = 1, backoff_s: float = 1.0) -> T:
    """`function()`, retried on network errors and False results; a ServerError naming `action` and the
    server when every attempt failed."""
    reason = "it refused the request"
    for attempt in range(1, attempts + 1):
        try:
            result = function()
        except requests.RequestException as error:
            reason = describe(error)
        else:
            if result is not False and result is not None:
                return result
            reason = "it refused the request (see the client log above for the HTTP status)"
        if attempt < attempts:
            log.warning("%s failed (attempt %d/%d): %s; retrying", action, attempt, attempts, reason)
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise ServerError(f"Cytomine server {host()}: {action} failed: {reason}")


def get_bytes(uri: str, params: dict[str, Any] | None = None) -> bytes:
    """The body of a GET on the API (`uri` relative to /api/); ServerError unless it answers 200."""
    try:
        response = Cytomine.get_instance()._get(uri, params)
    except requests.RequestException as error:
        raise ServerError(f"Cytomine server {host()}: GET {uri} failed: {describe(error)}") from error
    if response.status_code != requests.codes.ok:
        raise ServerError(f"Cytomine server {host()}: GET {uri} answered HTTP {response.status_code}")
    return response.content
