"""S3ObjectStore: objects in an S3 bucket (AWS or any S3-compatible server).

Vocabulary: the store keeps object ``name`` under the *key* ``<prefix>/<name>`` of
``bucket``. An *endpoint* is the base URL of an S3-compatible server (MinIO, SeaweedFS,
Ceph RGW, R2); with one we use path-style addressing (``https://host/bucket/key``), which
every such server understands. Without one we talk to AWS, region from the environment.

Retries. botocore retries each request (throttling, 5xx, resets, timeouts) with its
"standard" mode: ``retries`` attempts in all, jittered exponential backoff, and a retry
quota that stops retry storms. What botocore cannot retry is done by us:

* a body cut short mid-download (the status line was 200, the bytes stopped): retried
  with the same number of attempts, backoff from ``backoff`` (``s3_download.py``);
* a complete download whose length does not match the requested range (a server bug):
  retried once, then reported as StoreError (``s3_download.py``);
* 409 ConditionalRequestConflict on a conditional create: retried (for multipart, the
  upload is started again).

A request whose answer was lost can be retried after it took effect. Two places care:
a conditional create answered 412 on a retry compares the stored object with ours (equal
means the first attempt won), and a CompleteMultipartUpload answered NoSuchUpload on a
retry checks that the object is there with our size.

Uploads carry Content-MD5, so a body torn in transit is refused by the server instead of
stored (restic #2202; it also makes Object-Lock buckets usable). botocore's newer CRC
checksums are switched to "when required", since several S3-compatible servers reject
them.

Every botocore, urllib3 and socket error leaves this module as a StoreError subclass:
404 ObjectNotFound, 403 StorePermissionError, 5xx/throttling/connection StoreUnavailable.

This module holds the store (the ObjectStore contract on a bucket) and its backend
registration; beside it: ``s3_boto.py`` (client, request counting, error mapping),
``s3_download.py`` (checked and retried downloads), ``s3_upload.py`` (simple and
multipart uploads), ``s3_url.py`` (locations, ``-o`` options).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import botocore.exceptions

from backupkit.errors import BadArgument, ObjectNotFound, StoreError, StoreUnavailable
from backupkit.store.base import Backend, ObjectInfo, ObjectSource, ObjectStore, check_name, split_prefix
from backupkit.store.retry import Backoff, RequestStats
from backupkit.store.s3_boto import BOTO_ERRORS, count_request, error_code, make_client, map_error, retry_attempts
from backupkit.store.s3_download import download, stream_ranges, streamable
from backupkit.store.s3_upload import Body, body_size, put_multipart, put_simple
from backupkit.store.s3_url import FORMS, OPTIONS, parse_url

MiB = 1024 * 1024
#: Objects larger than this are uploaded in parts.
DEFAULT_MULTIPART_THRESHOLD = 32 * MiB
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
PROBE_PREFIX = ".bk-probe-"

_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


class S3ObjectStore(ObjectStore):
    """An ObjectStore on an S3 bucket.

    Credentials come the AWS way: environment (``AWS_ACCESS_KEY_ID`` ...), the shared
    config and credentials files (``AWS_PROFILE`` or ``profile``), or an instance or
    container role; explicit keys are accepted for programs that hold them already.

    Safe to use from up to ``connections`` threads at once (one botocore client, a bounded
    urllib3 pool).

    Args:
        bucket: the bucket name.
        prefix: a key prefix inside the bucket ("" for the bucket's root).
        endpoint_url: an S3-compatible server (``https://host:port``); None for AWS.
        region: the signing region; default from the environment/profile, else
            ``us-east-1``.
        profile: an AWS config profile name.
        aws_access_key_id, aws_secret_access_key, aws_session_token: explicit
            credentials (prefer the environment).
        connections: requests at once (the workers' count; the connection pool keeps
            a few more: ``s3_boto.make_client``).
        retries: attempts per request in all, botocore's ``total_max_attempts``; also
            bounds the retries of cut-short downloads and conditional-write conflicts.
        retry_mode: botocore retry mode, ``"standard"`` or ``"adaptive"``.
        backoff: the first backoff bound in seconds for the retries done here.
        connect_timeout, read_timeout: socket timeouts in seconds.
        multipart_threshold: objects larger than this are uploaded in parts.
        part_size: the multipart part size (at least 5 MiB).
        list_page_size: keys per ListObjectsV2 page (at most 1000).
        verify: TLS verification: True, False, or a CA bundle path.
        addressing_style: ``"path"`` (default with an endpoint) or ``"virtual"``/``"auto"``.
    """

    #: A request costs ~10-50 ms: at ~50 MB/s that is ~1 MiB of transfer (see ObjectStore).
    request_bytes = 1024 * 1024
    streams_ranges = True  # get_ranges: one request per span, streamed

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        connections: int = 8,
        retries: int = 10,
        retry_mode: str = "standard",
        backoff: float = 0.2,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        list_page_size: int = 1000,
        verify: bool | str | None = None,
        addressing_style: str | None = None,
    ) -> None:
        if not _BUCKET_RE.match(bucket):
            raise BadArgument(f"invalid S3 bucket name: {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_name(prefix)
            except ValueError:
                raise BadArgument(f"invalid S3 key prefix: {prefix!r}") from None
        if part_size < MIN_PART_SIZE:
            raise BadArgument(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if not 1 <= list_page_size <= 1000:
            raise BadArgument("list_page_size must be between 1 and 1000")
        if retries < 1 or connections < 1:
            raise BadArgument("retries and connections must be at least 1")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self._key_prefix = prefix + "/" if prefix else ""
        self._multipart_threshold = max(multipart_threshold, 0)
        self._part_size = part_size
        self._page_size = list_page_size
        self._backoff = Backoff(attempts=retries, base=backoff, cap=max(backoff, 5.0))
        self._stats = RequestStats()
        self._probe_lock = threading.Lock()
        where = f"{endpoint_url.rstrip('/')}/" if endpoint_url else ""
        self.location = f"s3:{where}{bucket}" + (f"/{prefix}" if prefix else "")

        # The client is made on first use: botocore takes ~0.3 s to load the S3 model,
        # which opening a repository overlaps with deriving the key from the password.
        self._client_args = dict(
            profile=profile, region=region, addressing_style=addressing_style, retries=retries,
            retry_mode=retry_mode, connections=connections, connect_timeout=connect_timeout,
            read_timeout=read_timeout, aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key, aws_session_token=aws_session_token,
            verify=verify,
        )
        self._client_obj: Any = None
        self._client_lock = threading.Lock()

    @property
    def _client(self) -> Any:
        client = self._client_obj
        if client is None:
            with self._client_lock:
                if self._client_obj is None:
                    self._client_obj = make_client(self.location, self.endpoint_url, self._before_send, **self._client_args)
                client = self._client_obj
        return client

    # -- accounting -----------------------------------------------------------------------

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> None:
        count_request(self._stats, request, event_name)

    def stats(self) -> dict[str, int]:
        """HTTP requests sent per kind (retries included), payload bytes, retries.

        Keys: ``GET GET_RANGE PUT LIST HEAD DELETE`` (multipart create/part/complete
        count as PUT), ``bytes_up``, ``bytes_down``, ``retries``, and ``OTHER`` if any.
        """
        return self._stats.snapshot()

    # -- helpers ----------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self._key_prefix + check_name(name)

    def _download(self, name: str, offset: int | None = None, length: int = 0, max_size: int | None = None) -> bytes:
        return download(self._client, self.bucket, self._key(name), name, self._stats, self._backoff, offset, length, max_size)

    def _upload(self, key: str, data: Body, what: str, *, if_none_match: bool) -> None:
        size = body_size(data)
        if size > self._multipart_threshold:
            put_multipart(self._client, self.bucket, key, data, self._part_size, if_none_match=if_none_match)
        else:
            put_simple(self._client, self.bucket, key, data, if_none_match=if_none_match)
        self._stats.add("bytes_up", size)

    # -- the contract -----------------------------------------------------------------------

    def get(self, name: str, max_size: int | None = None) -> bytes:
        return self._download(name, max_size=max_size)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StoreError(f"invalid range {offset}+{length} of {name}")
        if length == 0:  # S3 has no empty range; check the offset against the size
            size = self.stat(name).size
            if offset > size:
                raise StoreError(f"reading {name}: offset {offset} is past the end ({size} bytes)")
            return b""
        return self._download(name, offset, length)

    def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """``get_range`` of each, through one request from the first range to the last
        when they ascend without overlapping (``s3_download.stream_ranges``): one held at
        a time, as they arrive."""
        ranges = list(ranges)
        if len(ranges) < 2 or not streamable(ranges):
            yield from super().get_ranges(name, ranges)
            return
        yield from stream_ranges(self._client, self.bucket, self._key(name), name, self._stats, self._backoff, ranges)

    def put(self, name: str, data: bytes) -> None:
        what = f"writing {name}"
        key = self._key(name)
        try:
            self._upload(key, bytes(data), what, if_none_match=False)
        except BOTO_ERRORS as exc:
            raise map_error(exc, what) from exc

    def put_source(self, name: str, source: ObjectSource) -> None:
        """``put`` streamed from the source's file (see s3_upload.py)."""
        what = f"writing {name}"
        key = self._key(name)
        try:
            self._upload(key, source, what, if_none_match=False)
        except BOTO_ERRORS as exc:
            raise map_error(exc, what) from exc

    def put_if_absent(self, name: str, data: bytes) -> bool:
        what = f"creating {name}"
        key = self._key(name)
        data = bytes(data)
        if not self.atomic_put_if_absent:
            # The store ignores If-None-Match (see probe_conditional_writes): check, then
            # write. Racing writers can both win; callers know from the attribute.
            if self.exists(name):
                return False
            self.put(name, data)
            return True
        for attempt in range(self._backoff.attempts):
            try:
                self._upload(key, data, what, if_none_match=True)
                return True
            except BOTO_ERRORS as exc:
                code, status = error_code(exc)
                if status == 412 or code == "PreconditionFailed":
                    # On a retry, the name may be taken by our own first attempt.
                    return bool(retry_attempts(exc)) and self.holds(name, data)
                if status == 409 or code == "ConditionalRequestConflict":
                    self._stats.add("retries")
                    self._backoff.wait(attempt)
                    continue
                raise map_error(exc, what) from exc
        raise StoreUnavailable(f"{what}: concurrent writers kept conflicting")

    def delete(self, name: str) -> None:
        # DeleteObject answers 204 whether or not the key existed; the contract wants
        # ObjectNotFound, so ask first. (A racing delete in between goes unnoticed.)
        self.stat(name)
        what = f"deleting {name}"
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except BOTO_ERRORS as exc:
            raise map_error(exc, what) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        split_prefix(prefix)  # ValueError for a prefix no name can start with
        what = f"listing {prefix or '(everything)'} in {self.location}"
        key_prefix = self._key_prefix + prefix
        strip = len(self._key_prefix)
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": key_prefix,
            "MaxKeys": self._page_size,
        }
        tokens: set[str] = set()
        while True:
            try:
                page = self._client.list_objects_v2(**request)
            except BOTO_ERRORS as exc:
                err = map_error(exc, what)
                if isinstance(err, ObjectNotFound):  # NoSuchBucket: never "empty"
                    err = StoreError(str(err))
                raise err from exc
            for entry in page.get("Contents", ()):
                key = entry["Key"]
                if not key.startswith(key_prefix):
                    raise StoreError(f"{what}: the store returned the foreign key {key!r}")
                name = key[strip:]
                if name.startswith(PROBE_PREFIX):
                    continue
                try:
                    check_name(name)
                except ValueError:
                    continue  # not one of ours (e.g. a "directory/" marker)
                yield ObjectInfo(name, int(entry["Size"]), entry["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token or token in tokens:
                raise StoreError(f"{what}: the store broke the listing's pagination")
            tokens.add(token)
            request["ContinuationToken"] = token

    def stat(self, name: str) -> ObjectInfo:
        what = f"stat {name}"
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except BOTO_ERRORS as exc:
            raise map_error(exc, what) from exc
        return ObjectInfo(name, int(head["ContentLength"]), head["LastModified"].timestamp())

    # -- capabilities ---------------------------------------------------------------------

    def probe_conditional_writes(self) -> bool:
        """Find out whether the store honours ``If-None-Match: *``; return the answer.

        Writes a fresh probe object twice with If-None-Match. A store that honours the
        header refuses the second write (412). One that silently ignores it (Incus,
        lxc/incus #3651; some Ceph versions) accepts it: then ``atomic_put_if_absent``
        becomes False and ``put_if_absent`` falls back to check-then-write, which callers
        must back with their own re-check (the lock protocol does). A store that rejects
        the header outright (400/501) is treated the same way. The probe object is
        deleted again. Costs 3 requests; call it once when opening a repository.
        """
        with self._probe_lock:
            key = f"{self._key_prefix}{PROBE_PREFIX}{secrets.token_hex(8)}"
            what = f"probing conditional writes in {self.location}"
            supported = True
            try:
                for attempt in range(2):
                    try:
                        put_simple(self._client, self.bucket, key, b"probe", if_none_match=True)
                    except botocore.exceptions.ClientError as exc:
                        code, status = error_code(exc)
                        if attempt == 1 and (status == 412 or code == "PreconditionFailed"):
                            break  # refused: honoured
                        if status in (400, 501) or code in ("NotImplemented", "InvalidArgument"):
                            supported = False
                            break
                        raise
                else:
                    supported = False  # the second conditional write went through
            except BOTO_ERRORS as exc:
                raise map_error(exc, what) from exc
            finally:
                try:
                    self._client.delete_object(Bucket=self.bucket, Key=key)
                except BOTO_ERRORS:
                    pass
            self.atomic_put_if_absent = supported
            return supported

    def close(self) -> None:
        client = self._client_obj
        if client is None:
            return
        try:
            client.close()
        except BOTO_ERRORS:
            pass


def open_s3(location: str, **options: Any) -> S3ObjectStore:
    """Open an ``s3:`` location (the part after ``s3:``) with S3ObjectStore ``options``."""
    return S3ObjectStore(**parse_url(location), **options)


BACKEND = Backend(name="s3", open=open_s3, forms=FORMS, connections=8, options=OPTIONS)
