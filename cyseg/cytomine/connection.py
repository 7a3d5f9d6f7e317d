"""Talking to the Cytomine server: timeouts, retries, and errors that name the server and the action.

The 2.4.1 client sends requests without a timeout (a server that stops answering would hang
the job forever), never retries, and reports most failures by returning False. `harden` gives its
session a default timeout and retries with back-off for idempotent requests (on connection errors
and 5xx answers); `call` turns a False result or a network error into a `ServerError` that says
what was being done (with the HTTP status of the answer that failed it, which the client does not
report), retrying when asked (a POST is retried only by callers that first check what the server
stored, through `before_retry`); `get_bytes` fetches a picture into memory (the client
only offers downloads to files). Every retry loop is bounded: at most `attempts` tries, back-off
capped at `MAX_BACKOFF_S`.
"""
from __future__ import annotations

import logging
import threading
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
NETWORK_RETRIES = 6  # for idempotent requests (GET, PUT, DELETE); POSTs are retried by their callers
RETRY_BACKOFF_S = 0.1  # doubled at each retry (the first is immediate), capped at MAX_BACKOFF_S
MAX_BACKOFF_S = 2.0
RETRY_STATUSES = (429, 500, 502, 503, 504)

_last = threading.local()  # the status of this thread's last answer that was not a success


class ServerError(CysegError):
    """The Cytomine server failed or stopped answering."""


class _TimeoutAdapter(HTTPAdapter):
    """An adapter that applies a default timeout to requests sent without one, and retries
    idempotent requests that fail to connect, lose their connection (a server closing an idle
    keep-alive connection just as it is reused is routine, not a failure), answer 5xx (a busy
    gateway, a server restarting) or 429, or whose answer is cut short (read here, not by the
    session, so that it can be retried)."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        retries = Retry(total=NETWORK_RETRIES, backoff_factor=RETRY_BACKOFF_S, backoff_max=MAX_BACKOFF_S,
                        status_forcelist=RETRY_STATUSES, allowed_methods=Retry.DEFAULT_ALLOWED_METHODS,
                        raise_on_status=False)
        super().__init__(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE, max_retries=retries)
        self.timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        for attempt in range(1, NETWORK_RETRIES + 1):
            response = super().send(request, **kwargs)
            if kwargs.get("stream") or request.method not in Retry.DEFAULT_ALLOWED_METHODS:
                return response
            try:
                response.content  # noqa: B018 (read now)
                return response
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
                log.warning("%s %s: the answer was cut short; retrying", request.method, request.path_url)
                time.sleep(backoff(attempt, RETRY_BACKOFF_S))
        return super().send(request, **kwargs)  # the last try, read by the session


def harden(client: Cytomine, connect_s: float = CONNECT_TIMEOUT_S, read_s: float = READ_TIMEOUT_S) -> None:
    """Give the client's session default timeouts and retries (this replaces the client's HTTP cache
    adapter, which a job does not need: it reads each tile once)."""
    adapter = _TimeoutAdapter((connect_s, read_s))
    client._session.mount("http://", adapter)
    client._session.mount("https://", adapter)
    client._session.hooks["response"].append(_note_failure)


def _note_failure(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if not response.ok:
        _last.status = response.status_code


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
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "its answer was cut short"
    return f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}".rstrip(": ")


def backoff(attempt: int, base_s: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base_s, doubled each time, capped."""
    return min(base_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


def call(action: str, function: Callable[[], T], attempts: int = 1, backoff_s: float = RETRY_BACKOFF_S,
         before_retry: Callable[[], None] | None = None) -> T:
    """`function()`, retried on network errors and False results (after `before_retry()`, which may learn
    what a failed attempt did store); a ServerError naming `action` and the server when every attempt failed."""
    reason = "it refused the request"
    for attempt in range(1, attempts + 1):
        _last.status = None
        try:
            result = function()
        except requests.RequestException as error:
            reason = describe(error)
        else:
            if result is not False and result is not None:
                return result
            status = getattr(_last, "status", None)
            reason = f"it answered HTTP {status}" if status else "it refused the request"
        if attempt < attempts:
            log.warning("%s failed (attempt %d/%d): %s; retrying", action, attempt, attempts, reason)
            time.sleep(backoff(attempt, backoff_s))
            if before_retry is not None:
                before_retry()
    raise ServerError(f"Cytomine server {host()}: {action} failed after {attempts} attempt(s): {reason}"
                      if attempts > 1 else f"Cytomine server {host()}: {action} failed: {reason}")


def get_bytes(uri: str, params: dict[str, Any] | None = None) -> bytes:
    """The body of a GET on the API (`uri` relative to /api/); ServerError unless it answers 200."""
    try:
        response = Cytomine.get_instance()._get(uri, params)
    except requests.RequestException as error:
        raise ServerError(f"Cytomine server {host()}: GET {uri} failed: {describe(error)}") from error
    if response.status_code != requests.codes.ok:
        raise ServerError(f"Cytomine server {host()}: GET {uri} answered HTTP {response.status_code}")
    return response.content
