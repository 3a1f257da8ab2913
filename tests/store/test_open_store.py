"""open_store: URL forms, options and the missing-boto3 message."""

from __future__ import annotations

import sys

import pytest

from backupkit.errors import UsageError
from backupkit.store import LocalObjectStore, MemoryObjectStore, open_store
from backupkit.store.s3 import S3ObjectStore, parse_url


@pytest.mark.parametrize(
    "url",
    ["{p}", "file:{p}", "file://{p}"],
)
def test_local_forms(tmp_path, url):
    store = open_store(url.format(p=tmp_path / "repo"))
    assert isinstance(store, LocalObjectStore)
    assert store.root == str(tmp_path / "repo")


def test_unknown_scheme_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("backup:2024")
    assert isinstance(store, LocalObjectStore)
    assert store.root == str(tmp_path / "backup:2024")


def test_local_options_pass_through(tmp_path):
    store = open_store(str(tmp_path), fsync=False)
    store.put("a/b", b"x")
    assert store.get("a/b") == b"x"


def test_memory():
    one, two = open_store("memory:"), open_store("memory:")
    assert isinstance(one, MemoryObjectStore) and one is not two


@pytest.mark.parametrize(
    "location, bucket, prefix, endpoint",
    [
        ("https://minio.example:9000/bkt/some/prefix", "bkt", "some/prefix", "https://minio.example:9000"),
        ("http://127.0.0.1:8333/bkt", "bkt", "", "http://127.0.0.1:8333"),
        ("http://127.0.0.1:8333/bkt/", "bkt", "", "http://127.0.0.1:8333"),
        ("https://s3.example/bkt/p", "bkt", "p", "https://s3.example"),
        ("my-bucket/backups/laptop", "my-bucket", "backups/laptop", None),
        ("my-bucket", "my-bucket", "", None),
        ("s3.eu-west-1.amazonaws.com/bkt/p", "bkt", "p", "https://s3.eu-west-1.amazonaws.com"),
    ],
)
def test_parse_s3_url(location, bucket, prefix, endpoint):
    assert parse_url(location) == {"bucket": bucket, "prefix": prefix, "endpoint_url": endpoint}


@pytest.mark.parametrize(
    "url",
    [
        "",
        "s3:",
        "s3://bucket/prefix",
        "s3:https://user:secret@host/bucket",
        "s3:https://host/",
        "s3:https://host/bucket?x=1",
        "s3:in valid/prefix",
        "s3:bucket/../up",
    ],
)
def test_bad_urls(url):
    with pytest.raises(UsageError):
        open_store(url)


def test_s3_store_without_network():
    store = open_store("s3:http://127.0.0.1:9/bkt/pre/fix", connections=3, retries=2)
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix) == ("bkt", "pre/fix")
    assert store.location == "s3:http://127.0.0.1:9/bkt/pre/fix"
    assert store._client.meta.config.max_pool_connections == 3


def test_unknown_option_is_a_usage_error():
    with pytest.raises(UsageError, match="bad option"):
        open_store("memory:", colour="blue")


def test_missing_boto3_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "backupkit.store.s3")
    with pytest.raises(UsageError, match=r"pip install 'backupkit\[s3\]'"):
        open_store("s3:bucket/prefix")
