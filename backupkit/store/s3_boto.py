"""The botocore side of the S3 store: making the client, counting its requests, mapping its errors.

Vocabulary: an error *code* is S3's ``Error.Code`` (``NoSuchKey``, ``SlowDown``); the
*status* is the HTTP status of the answer. ``map_error`` turns every botocore, urllib3
and socket error into a StoreError subclass: 404 ObjectNotFound, 403
StorePermissionError, 5xx/throttling/connection StoreUnavailable. A request *kind* is
what ``RequestStats`` counts it under (``GET GET_RANGE PUT LIST HEAD DELETE OTHER``).
``s3.py`` holds the store itself.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import botocore.loaders
import botocore.session
import urllib3.exceptions
from botocore.config import Config

from backupkit.errors import ObjectNotFound, StoreError, StorePermissionError, StoreUnavailable
from backupkit.store.retry import RequestStats

BOTO_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_PERMISSION_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "InvalidObjectState",  # archived (Glacier) objects, Object Lock refusals
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "InternalError",
    "PriorRequestNotComplete",
    "ConditionalRequestConflict",
    "OperationAborted",
}
_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.ProfileNotFound,
)
_TRANSPORT_ERRORS = (
    botocore.exceptions.ConnectionError,  # refused, DNS, connect timeouts, proxies
    botocore.exceptions.HTTPClientError,  # resets, closed connections, read timeouts
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)

# botocore operation -> the request kind it is counted under (GET/GET_RANGE decided by
# the Range header).
OPERATION_KINDS = {
    "GetObject": "GET",
    "HeadObject": "HEAD",
    "PutObject": "PUT",
    "CreateMultipartUpload": "PUT",
    "UploadPart": "PUT",
    "CompleteMultipartUpload": "PUT",
    "AbortMultipartUpload": "DELETE",
    "ListObjectsV2": "LIST",
    "DeleteObject": "DELETE",
}


def error_code(exc: BaseException) -> tuple[str, int]:
    """(error code, HTTP status) of a ClientError; ("", 0) for anything else."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        return str(err.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)
    return "", 0


def retry_attempts(exc: BaseException) -> int:
    if isinstance(exc, botocore.exceptions.ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
    return 0


def map_error(exc: BaseException, what: str) -> StoreError:
    """Turn any botocore/urllib3/socket error raised while doing ``what`` into ours."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return StorePermissionError(
            f"{what}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance role"
        )
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or code or f"HTTP {status}"
        if code == "NoSuchBucket":
            return ObjectNotFound(f"{what}: the bucket does not exist")
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFound(f"{what}: not found")
        if code in _PERMISSION_CODES or status in (401, 403):
            if code == "RequestTimeTooSkewed":
                return StorePermissionError(f"{what}: the local clock is too far off ({message})")
            return StorePermissionError(f"{what}: access denied ({code or status}: {message})")
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return StoreUnavailable(f"{what}: the store is unavailable ({code or status}: {message})")
        return StoreError(f"{what}: {code or status}: {message}")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return StoreUnavailable(f"{what}: connection failed ({type(exc).__name__}: {exc})")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


class _Services:
    """``Loader.list_available_services``'s answer, asked lazily: botocore asks it only
    whether the model it loads exists, and listing every service to say so reads ~400
    directories and stats their files (a client in 0.050 s instead of 0.131 cold, 0.047
    instead of 0.065 warm: ``benchmarks/s3client.py``). ``in`` looks at that one
    service's directories; iterating lists them all, as botocore would."""

    def __init__(self, loader: botocore.loaders.Loader, type_name: str) -> None:
        self._loader, self._type = loader, type_name
        self._all: list[str] | None = None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            return False
        try:
            return bool(self._loader.list_api_versions(name, self._type))
        except botocore.exceptions.DataNotFoundError:
            return False

    def _listed(self) -> list[str]:
        if self._all is None:
            self._all = botocore.loaders.Loader.list_available_services(self._loader, self._type)
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._listed())

    def __len__(self) -> int:
        return len(self._listed())


def _answer_services_lazily(session: botocore.session.Session) -> None:
    """Have the session's model loader (as botocore made it: ``AWS_DATA_PATH`` and the
    rest honoured) answer ``list_available_services`` with ``_Services``."""
    loader = session.get_component("data_loader")
    loader.list_available_services = lambda type_name: _Services(loader, type_name)


#: connections the pool keeps over the workers' ``connections`` (``make_client``)
POOL_HEADROOM = 4


def make_client(
    location: str, endpoint_url: str | None, on_send: Callable[..., None], *, profile, region, addressing_style, retries, retry_mode, connections, connect_timeout,
    read_timeout, aws_access_key_id, aws_secret_access_key, aws_session_token, verify,
) -> Any:
    """A botocore S3 client for ``location``; ``on_send`` runs before every request sent.

    botocore's own session, not boto3's: boto3 adds only its resource layer and imports
    s3transfer with it, which cost ~0.1 s of every S3 command's start (``python -X
    importtime``: boto3 139-232 ms, botocore.session 119-173 ms; a client 87 ms against
    124-148 ms), and its ``Session(profile_name=...)`` is this session with ``profile``.
    """
    try:
        session = botocore.session.Session(profile=profile)
        _answer_services_lazily(session)
        session.get_scoped_config()  # a profile that does not exist: said now, as boto3 did
        region = region or session.get_config_variable("region") or ("us-east-1" if endpoint_url else None)
    except BOTO_ERRORS as exc:
        raise map_error(exc, f"opening {location}") from exc
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
        retries={"total_max_attempts": retries, "mode": retry_mode},
        # headroom over the workers' ``connections``: a restore's workers each hold one
        # for a whole streamed span, and the lock's refresh (or a blob read again) must
        # not find the pool full (urllib3 then says so on stderr, and drops a connection)
        max_pool_connections=connections + POOL_HEADROOM,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="backupkit",
    )
    try:
        client = session.create_client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            config=config,
            verify=verify,
        )
    except BOTO_ERRORS as exc:
        raise map_error(exc, f"opening {location}") from exc
    client.meta.events.register("before-send.s3", on_send)
    return client


def count_request(stats: RequestStats, request: Any, event_name: str) -> None:
    """What to do with every HTTP request botocore sends (retries included): count it in ``stats``.

    It also drops ``Expect: 100-continue``. When a server answers such a request
    with a final status instead of 100 (Go servers such as SeaweedFS and MinIO do
    for empty bodies), botocore keeps that response's status line on the pooled
    connection and misreads the next response on it: a silent stall until the read
    timeout, then a hidden retry (boto/botocore#3755; we hit it against SeaweedFS
    4.48 with botocore 1.43). Our bodies are at most ``multipart_threshold`` bytes,
    so sending them without waiting for 100 costs little.
    """
    if "Expect" in request.headers:
        del request.headers["Expect"]
    operation = event_name.rsplit(".", 1)[-1]
    kind = OPERATION_KINDS.get(operation, "OTHER")
    if kind == "GET" and "Range" in request.headers:
        kind = "GET_RANGE"
    stats.add(kind)
    # botocore numbers the attempts of one call in the request's context. Counting
    # retries here, as they are sent, also counts those of calls that fail in the
    # end (the response's RetryAttempts exists only for calls that got an answer).
    context = getattr(request, "context", None) or {}
    if int(context.get("retries", {}).get("attempt", 1) or 1) > 1:
        stats.add("retries")
