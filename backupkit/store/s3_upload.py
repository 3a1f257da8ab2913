"""Uploads to S3: one PutObject, or a multipart upload for large objects.

A body is bytes or an ``ObjectSource`` (a spooled pack): a simple upload streams the
source from its file (a pass for Content-MD5, then the body: botocore seeks back on a
retry); a multipart upload reads it one part at a time.

Every body carries Content-MD5, so a body torn in transit is refused by the server
instead of stored. A *conditional* upload sends ``If-None-Match: *`` (create only). A
CompleteMultipartUpload answered NoSuchUpload on a botocore retry counts as done when
the object is there with our size (the first try took effect, its answer was lost).
Errors are botocore's; ``s3.py`` maps them (``s3_boto.map_error``).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import botocore.exceptions

from backupkit.store.base import ObjectSource, iter_pieces
from backupkit.store.s3_boto import BOTO_ERRORS, error_code, retry_attempts

Body = bytes | ObjectSource


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def body_size(data: Body) -> int:
    return data.size if isinstance(data, ObjectSource) else len(data)


def put_simple(client: Any, bucket: str, key: str, data: Body, *, if_none_match: bool) -> None:
    """One PutObject with Content-MD5 (and ``If-None-Match: *``); botocore errors propagate."""
    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if if_none_match:
        request["IfNoneMatch"] = "*"
    if not isinstance(data, ObjectSource):
        client.put_object(Body=data, ContentMD5=md5_b64(data), **request)
        return
    with data.reader() as body:
        md5 = hashlib.md5(usedforsecurity=False)
        for piece in iter_pieces(body):
            md5.update(piece)
        body.seek(0)
        digest = base64.b64encode(md5.digest()).decode("ascii")
        client.put_object(Body=body, ContentLength=data.size, ContentMD5=digest, **request)

def _part(data: Body, start: int, part_size: int) -> bytes:
    if isinstance(data, ObjectSource):
        with data.reader() as r:
            r.seek(start)
            return r.read(part_size)  # read_at fills the part unless the end comes first
    return bytes(memoryview(data)[start : start + part_size])


def put_multipart(client: Any, bucket: str, key: str, data: Body, part_size: int, *, if_none_match: bool) -> None:
    """Upload in parts of ``part_size`` (one part in memory at a time); botocore errors
    propagate (callers map them)."""
    size = body_size(data)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        parts = []
        for number, start in enumerate(range(0, size, part_size), 1):
            chunk = _part(data, start, part_size)
            answer = client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ContentMD5=md5_b64(chunk),
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})
        request: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": parts},
        }
        if if_none_match:
            request["IfNoneMatch"] = "*"
        try:
            client.complete_multipart_upload(**request)
        except botocore.exceptions.ClientError as exc:
            # A retried Complete whose first try succeeded finds no upload any more.
            code, _ = error_code(exc)
            if not (code == "NoSuchUpload" and retry_attempts(exc) and _has_size(client, bucket, key, size)):
                raise
        upload_id = ""
    finally:
        if upload_id:
            try:
                client.abort_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id
                )
            except BOTO_ERRORS:
                pass  # the bucket's lifecycle rule cleans up what we could not

def _has_size(client: Any, bucket: str, key: str, size: int) -> bool:
    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"]) == size
    except BOTO_ERRORS:
        return False
