"""Uploads to S3: one PutObject, or a multipart upload for large objects.

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

from backupkit.store.s3_boto import BOTO_ERRORS, error_code, retry_attempts


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def put_simple(client: Any, bucket: str, key: str, data: bytes, *, if_none_match: bool) -> None:
    """One PutObject with Content-MD5 (and ``If-None-Match: *``); botocore errors propagate."""
    request: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "Body": data,
        "ContentMD5": md5_b64(data),
    }
    if if_none_match:
        request["IfNoneMatch"] = "*"
    client.put_object(**request)

def put_multipart(client: Any, bucket: str, key: str, data: bytes, part_size: int, *, if_none_match: bool) -> None:
    """Upload in parts of ``part_size``; botocore errors propagate (callers map them)."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        parts = []
        view = memoryview(data)
        for number, start in enumerate(range(0, len(data), part_size), 1):
            chunk = bytes(view[start : start + part_size])
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
            if not (code == "NoSuchUpload" and retry_attempts(exc) and _has_size(client, bucket, key, len(data))):
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
