"""What the REST adapters (Telnyx, Plivo, Vonage) share: a pooled async client, failures as SendError.

Each adapter owns its payloads, codes and tables; this module only owns the HTTP edge that
is the same for all of them:

    new_client(...)          one httpx2 AsyncClient per adapter: keep-alive connections reused
    await post(...)          POST and return the answer; a timeout, a refused or cut connection
                             or a broken answer raises SendError(transient=True, kind=...)
    transport_error(...)     that SendError, for any httpx2 request (brand events use it too)
    retry_after(headers)     a 429's Retry-After in seconds (delta-seconds or an HTTP date)
    flatten(payload)         a JSON payload as str→str, for the raw record (InboundSms.params)
    checked_api_url(url)     refuse a base URL that is not http(s)://host[:port][/path]
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx

from app.providers.base import SendError

# Enough idle connections for a worker's concurrent sends; a provider closes idle ones after
# about a minute, so ours go first and a reused connection is rarely a dead one.
MAX_KEEPALIVE = 32
KEEPALIVE_EXPIRY = 30.0
# Retry-After beyond this is capped: the outbox's backoff takes over for anything longer.
MAX_RETRY_AFTER = 3600.0


def checked_api_url(api_url: str, provider: str) -> str:
    """`api_url` without its trailing slash; ValueError unless it is http(s)://host[:port][/path]."""
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{provider} API URL must be http(s)://host[:port], got {api_url!r}")
    return api_url.rstrip("/")


def new_client(
    *,
    base_url: str,
    timeout: float,
    headers: Mapping[str, str],
    auth: tuple[str, str] | None = None,
) -> httpx.AsyncClient:
    """An async client for one provider: its base URL, auth and timeouts, connections kept alive."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        auth=auth,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(max_keepalive_connections=MAX_KEEPALIVE, keepalive_expiry=KEEPALIVE_EXPIRY),
        follow_redirects=False,
    )


async def post(
    client: httpx.AsyncClient,
    path: str,
    *,
    provider: str,
    timeout: float,
    json_body: Any = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST to `path` and return the answer, whatever its status; no answer raises a transient SendError."""
    try:
        if form is not None:
            return await client.post(path, data=dict(form), headers=headers)
        return await client.post(path, json=json_body, headers=headers)
    except httpx.TransportError as exc:
        raise transport_error(exc, who=provider, timeout=timeout, bad_url=f"bad {provider} API URL") from None


def transport_error(exc: httpx.TransportError, *, who: str, timeout: float, bad_url: str) -> SendError:
    """The SendError for a request that got no answer: a timeout or a lost connection is worth a retry, a bad URL not."""
    if isinstance(exc, httpx.TimeoutException):
        # The receiver may have acted on it: the outbox retries, like any transient error.
        return SendError(f"no answer from {who} within {timeout:g}s", transient=True, kind="timeout")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return SendError(f"{bad_url}: {exc}")
    # Refused, reset or cut mid-answer: the outcome is unknown, so it is worth a retry.
    return SendError(f"cannot reach {who}: {type(exc).__name__}", transient=True, kind="connection")


def json_of(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON (a proxy's HTML page, an empty body)."""
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None when absent or unreadable."""
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def is_transient_status(http_status: int) -> bool:
    """429 and 5xx are worth retrying; anything else the provider refused is final."""
    return http_status == 429 or http_status >= 500


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A JSON value as dotted keys to text (`to.0.phone_number`); null is "", booleans true/false."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        if not value and prefix:
            out[prefix] = ""
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        if not value and prefix:
            out[prefix] = ""
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{index}" if prefix else str(index)))
    elif value is None:
        out[prefix] = ""
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    else:
        text = str(value)
        # PostgreSQL's text cannot hold NUL; the character stays visible as U+FFFD.
        out[prefix] = text.replace("\x00", "\ufffd")
    return out


class PooledClient:
    """A REST adapter's HTTP client: one pool, made on the first send, closed by `aclose`."""

    _client: httpx.AsyncClient | None = None
    _closed: bool = False

    def _new_client(self) -> httpx.AsyncClient:
        """The adapter's client (its base URL, auth and timeouts)."""
        raise NotImplementedError

    def _http(self) -> httpx.AsyncClient:
        """The pooled client, made on first use."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    async def aclose(self) -> None:
        """Close the pooled connections; later sends raise SendError."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
