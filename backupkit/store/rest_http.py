"""The HTTP transport of the rest: store (``rest.py``): one urllib3 pool to one server.

``RestHttp`` holds ``connections`` keep-alive sockets to the server's origin, sends basic
auth when a user is given, and verifies TLS (with the system's CAs, a given bundle, or
not at all). urllib3 retries connection failures and 429/5xx answers (every request the
store sends is idempotent: writes carry the whole object) with jittered exponential
backoff; every attempt is counted in ``stats`` under the request's kind. A failed
connection leaves as StoreUnavailable. ``read_body`` reads an answer's body within a
bound and notices one cut short.
"""

from __future__ import annotations

import base64
from typing import Any

import urllib3
from urllib3.util import Retry, Timeout

from backupkit.errors import StoreUnavailable
from backupkit.store.rest_answers import RETRY_STATUS, transport_error
from backupkit.store.retry import Backoff, RequestStats


class RestHttp:
    """Requests to ``origin`` (``scheme://host[:port]``); ``auth``: (user, password) for
    HTTP basic auth, or None. The other arguments are RestObjectStore's."""

    def __init__(
        self, origin: str, auth: tuple[str, str] | None, *, connections: int, retries: int, backoff: float,
        connect_timeout: float, read_timeout: float, cacert: str | None, insecure_tls: bool,
    ) -> None:
        self.backoff = Backoff(attempts=retries, base=backoff, cap=max(backoff, 5.0))
        self.stats = RequestStats()
        self._headers = {"User-Agent": "backupkit"}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        retry = Retry(
            total=retries - 1,
            connect=retries - 1,
            read=retries - 1,
            status=retries - 1,
            other=0,
            allowed_methods=None,  # every request is idempotent (writes carry the whole object)
            status_forcelist=RETRY_STATUS,
            backoff_factor=backoff,
            backoff_max=max(backoff, 5.0),
            backoff_jitter=backoff,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        tls: dict[str, Any] = {}
        if origin.startswith("https:"):
            if insecure_tls:
                tls = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
            else:
                tls = {"cert_reqs": "CERT_REQUIRED"}
                if cacert:
                    tls["ca_certs"] = cacert
        self._pool = urllib3.connection_from_url(
            origin,
            maxsize=connections,
            block=True,
            retries=retry,
            timeout=Timeout(connect=connect_timeout, read=read_timeout),
            **tls,
        )

    def request(
        self, kind: str, method: str, path: str, what: str, *, body: Any = None,
        headers: dict[str, str] | None = None, stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request (urllib3 retries transient failures); count every attempt.
        ``stream``: leave the body unread (``read_body`` reads it)."""
        all_headers = dict(self._headers)
        if headers:
            all_headers.update(headers)
        try:
            response = self._pool.urlopen(
                method, path, body=body, headers=all_headers, preload_content=not stream,
                redirect=False, assert_same_host=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            self.stats.add(kind, 1 + self.backoff.attempts - 1)
            self.stats.add("retries", self.backoff.attempts - 1)
            raise transport_error(exc, what) from None
        except OSError as exc:
            self.stats.add(kind)
            raise transport_error(exc, what) from None
        history = len(response.retries.history) if response.retries else 0
        self.stats.add(kind, 1 + history)
        if history:
            self.stats.add("retries", history)
        return response

    def close(self) -> None:
        self._pool.close()


def read_body(response: urllib3.BaseHTTPResponse, what: str, limit: int | None = None) -> bytes:
    """The whole body, or its first ``limit`` + 1 bytes when it is longer: a server that
    sends no Content-Length (chunked) or a false one cannot make bk read more than the
    caller allows. Raises StoreUnavailable if it is cut short."""
    try:
        if limit is None:
            data = response.read(decode_content=False)
        else:
            parts, got = [], 0
            for piece in response.stream(1 << 20, decode_content=False):
                parts.append(piece[: limit + 1 - got])
                got += len(parts[-1])
                if got > limit:
                    break
            data = b"".join(parts)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise StoreUnavailable(f"{what}: the download broke off ({type(exc).__name__})") from None
    finally:
        response.release_conn()  # a connection with unread bytes is dropped by the pool
    if limit is not None and len(data) > limit:
        return data  # the caller refuses it (or cuts its range out)
    expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != len(data):
        raise StoreUnavailable(f"{what}: the server sent {len(data)} of {expected} bytes")
    return data


__all__ = ["RestHttp", "read_body"]
