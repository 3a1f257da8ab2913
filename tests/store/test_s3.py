"""S3ObjectStore beyond the contract: error mapping, the probe, stats, and faults.

Faults come from a real HTTP proxy in front of moto's server (``s3_fault_proxy``); no
test mocks botocore.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from backupkit.errors import (
    ObjectNotFound,
    StoreError,
    StorePermissionError,
    StoreUnavailable,
)
from backupkit.store import open_store
from backupkit.store.s3 import S3ObjectStore

MiB = 1024 * 1024


# -- against the real server (SeaweedFS) ------------------------------------------------------


def test_open_store_url_round_trip(s3_server):
    creds = {}
    if s3_server.access_key:
        creds = {"aws_access_key_id": s3_server.access_key, "aws_secret_access_key": s3_server.secret_key}
    store = open_store(s3_server.url(f"url-{os.getpid()}-{time.monotonic_ns()}"), **creds)
    assert isinstance(store, S3ObjectStore)
    store.put("config", b"hello")
    assert store.get("config") == b"hello"
    assert [i.name for i in store.list()] == ["config"]


def test_prefixes_do_not_see_each_other(s3_server):
    a, b = s3_server.store("iso/a"), s3_server.store("iso/ab")
    a.put("x", b"a")
    b.put("x", b"b")
    assert [i.name for i in a.list()] == ["x"] and a.get("x") == b"a"


def test_probe_on_a_real_server(s3_store):
    assert s3_store.probe_conditional_writes() is True
    assert s3_store.atomic_put_if_absent is True
    assert list(s3_store.list()) == []  # the probe object is gone


def test_wrong_credentials(s3_server):
    if s3_server.kind != "seaweedfs":
        pytest.skip("only SeaweedFS checks signatures here")
    store = s3_server.store(aws_secret_access_key="wrong" * 8)
    with pytest.raises(StorePermissionError):
        store.get("config")
    with pytest.raises(StorePermissionError):
        store.put("config", b"x")
    with pytest.raises(StorePermissionError):
        list(store.list())


def test_missing_bucket(s3_server):
    store = S3ObjectStore("no-such-bucket-bk", "p", endpoint_url=s3_server.endpoint,
                          aws_access_key_id=s3_server.access_key or "x",
                          aws_secret_access_key=s3_server.secret_key or "x", retries=1)
    with pytest.raises(ObjectNotFound, match="bucket"):
        store.get("config")
    with pytest.raises(StoreError) as info:
        list(store.list())
    assert not isinstance(info.value, ObjectNotFound)  # a listing never just "finds nothing"


def test_stats_count_requests(s3_store):
    s3_store.put("a", b"12345")
    s3_store.get("a")
    s3_store.get_range("a", 1, 3)
    list(s3_store.list())
    s3_store.stat("a")
    s3_store.delete("a")  # HEAD + DELETE
    stats = s3_store.stats()
    assert {k: stats[k] for k in ("PUT", "GET", "GET_RANGE", "LIST", "HEAD", "DELETE")} == {
        "PUT": 1, "GET": 1, "GET_RANGE": 1, "LIST": 1, "HEAD": 2, "DELETE": 1,
    }
    assert stats["bytes_up"] == 5 and stats["bytes_down"] == 8


def test_ranges_come_through_one_request_as_they_arrive(s3_store):
    """get_ranges of ascending ranges: one ranged GET from the first to the last, the
    gaps read and dropped, each range as get_range gives it; other shapes one request
    each."""
    data = os.urandom(3 * MiB)
    s3_store.put("data/p", data)
    ranges = [(10, 1000), (1010, 5), (200_000, MiB + 3), (2 * MiB, MiB)]
    before = s3_store.stats()
    got = list(s3_store.get_ranges("data/p", ranges))
    assert got == [data[o : o + n] for o, n in ranges]
    after = s3_store.stats()
    assert after["GET_RANGE"] - before["GET_RANGE"] == 1
    assert after["bytes_down"] - before["bytes_down"] == 3 * MiB - 10  # the extent, once
    unordered = [(2 * MiB, 10), (0, 10)]
    assert list(s3_store.get_ranges("data/p", unordered)) == [data[o : o + n] for o, n in unordered]
    assert s3_store.stats()["GET_RANGE"] - after["GET_RANGE"] == 2
    with pytest.raises(StoreError, match="past the end"):
        list(s3_store.get_ranges("data/p", [(0, 10), (3 * MiB - 5, 10)]))
    with pytest.raises(ObjectNotFound):
        list(s3_store.get_ranges("data/none", [(0, 10), (20, 10)]))


def test_list_pages(s3_server):
    store = s3_server.store(list_page_size=7)
    names = {f"data/{i:03d}" for i in range(50)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: store.put(n, b"x"), names))
    assert {i.name for i in store.list("data/")} == names
    assert store.stats()["LIST"] == 8


def test_connection_refused_is_unavailable_and_quick():
    store = S3ObjectStore("bucket", endpoint_url="http://127.0.0.1:9", retries=2, backoff=0.01,
                          aws_access_key_id="x", aws_secret_access_key="y", connect_timeout=2)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.get("config")
    with pytest.raises(StoreUnavailable):
        list(store.list())
    assert time.monotonic() - start < 15


# -- faults, through the proxy in front of moto ----------------------------------------------


def test_five_percent_faults_are_retried_to_success(s3_fault_proxy):
    s3_fault_proxy.configure(rate=0.05, seed=5)
    store = s3_fault_proxy.store(retries=10)
    payloads = {f"data/{i:03d}": os.urandom(1000 + i) for i in range(200)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: store.put(*kv), payloads.items()))
        got = dict(zip(payloads, pool.map(store.get, payloads)))
    assert got == payloads
    assert {i.name for i in store.list("data/")} == set(payloads)
    assert sum(s3_fault_proxy.faults.values()) >= 5, s3_fault_proxy.faults
    assert store.stats()["retries"] >= 5


def test_all_requests_failing_raise_unavailable_quickly(s3_fault_proxy):
    s3_fault_proxy.configure(rate=1.0, kinds=("500", "503", "reset"))
    store = s3_fault_proxy.store(retries=2, backoff=0.01)
    start = time.monotonic()
    for op in (lambda: store.put("a", b"x"), lambda: store.get("a"),
               lambda: list(store.list()), lambda: store.put_if_absent("b", b"y")):
        with pytest.raises(StoreUnavailable):
            op()
    assert time.monotonic() - start < 20


def test_download_cut_short_is_retried(s3_fault_proxy):
    store = s3_fault_proxy.store()
    data = os.urandom(100_000)
    store.put("data/big", data)
    s3_fault_proxy.fail_next("truncate", method="GET")
    assert store.get("data/big") == data
    s3_fault_proxy.fail_next("truncate", method="GET")
    assert store.get_range("data/big", 10, 50_000) == data[10:50_010]
    assert store.stats()["retries"] >= 2


def test_streamed_ranges_cut_short_resume_where_they_stopped(s3_fault_proxy):
    """A streamed body cut short is asked for again from the byte where it stopped: the
    ranges come whole and no byte is downloaded twice; cut short every time, it fails."""
    store = s3_fault_proxy.store(retries=3, backoff=0.01)
    data = os.urandom(400_000)
    store.put("data/big", data)
    ranges = [(0, 100_000), (100_000, 150_000), (300_000, 100_000)]
    s3_fault_proxy.fail_next("truncate", method="GET")
    assert list(store.get_ranges("data/big", ranges)) == [data[o : o + n] for o, n in ranges]
    stats = store.stats()
    assert stats["retries"] >= 1 and stats["GET_RANGE"] == 2
    assert stats["bytes_down"] == 400_000  # the second request began where the first stopped
    s3_fault_proxy.fail_next("truncate", count=100, method="GET")
    with pytest.raises(StoreUnavailable, match="cut short"):
        list(store.get_ranges("data/big", ranges))


def test_download_always_cut_short_fails(s3_fault_proxy):
    store = s3_fault_proxy.store(retries=3, backoff=0.01)
    store.put("data/big", os.urandom(10_000))
    s3_fault_proxy.fail_next("truncate", count=100, method="GET")
    with pytest.raises(StoreUnavailable, match="cut short"):
        store.get("data/big")


def test_short_range_is_retried_once_then_an_error(s3_fault_proxy):
    store = s3_fault_proxy.store()
    data = os.urandom(1000)
    store.put("p", data)
    s3_fault_proxy.fail_next("short", method="GET")
    assert store.get_range("p", 100, 200) == data[100:300]
    s3_fault_proxy.fail_next("short", count=2, method="GET")
    with pytest.raises(StoreError, match="expected") as info:
        store.get_range("p", 100, 200)
    assert not isinstance(info.value, StoreUnavailable)


def test_lost_put_if_absent_response_still_wins(s3_fault_proxy):
    store = s3_fault_proxy.store()
    s3_fault_proxy.fail_next("reset_after", method="PUT")
    assert store.put_if_absent("locks/mine", b"lock of host a") is True
    assert store.get("locks/mine") == b"lock of host a"
    assert s3_fault_proxy.faults["reset_after"] == 1
    # Someone else's object under the name stays someone else's, even after a retry.
    store.put("locks/theirs", b"lock of host b")
    s3_fault_proxy.fail_next("500", method="PUT")
    assert store.put_if_absent("locks/theirs", b"lock of host a") is False


def test_multipart_under_faults(s3_fault_proxy):
    store = s3_fault_proxy.store(retries=10, multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = os.urandom(12 * MiB)
    s3_fault_proxy.fail_next("reset_after", method="PUT", path_contains="partNumber=2")
    s3_fault_proxy.fail_next("500", method="POST", path_contains="uploadId")
    store.put("data/multi", data)
    assert store.get("data/multi") == data
    assert store.stats()["PUT"] >= 1 + 3 + 1 + 2  # create, 3 parts, complete, 2 retries


def test_listing_fault_mid_way_is_an_error_not_a_short_list(s3_fault_proxy):
    store = s3_fault_proxy.store(list_page_size=10, retries=2, backoff=0.01)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put(f"data/{i:02d}", b"x"), range(35)))
    s3_fault_proxy.fail_next("500", count=10, method="GET", path_contains="continuation-token")
    seen = []
    with pytest.raises(StoreUnavailable):
        for info in store.list("data/"):
            seen.append(info.name)
    assert len(seen) == 10


def test_probe_detects_ignored_if_none_match(s3_fault_proxy):
    store = s3_fault_proxy.store()
    s3_fault_proxy.strip_if_none_match = True
    assert store.probe_conditional_writes() is False
    assert store.atomic_put_if_absent is False
    # The fallback still refuses a taken name (check, then write).
    assert store.put_if_absent("locks/l", b"a") is True
    assert store.put_if_absent("locks/l", b"b") is False
    assert store.get("locks/l") == b"a"
    assert list(store.list()) != [] and all(not i.name.startswith(".bk-probe") for i in store.list())


def test_a_chunked_body_longer_than_the_bound_is_refused_without_reading_it():
    """Issue 10.2 over S3: an answer without Content-Length is read only up to the
    object kind's bound (it was read whole: a hostile endpoint could send any amount)."""
    from backupkit.errors import ObjectTooLarge
    from tests.store.hostile_http import chunked_server

    with chunked_server() as (url, _sent):
        store = S3ObjectStore(
            "bucket", endpoint_url=url, aws_access_key_id="k", aws_secret_access_key="s", region="us-east-1",
            retries=1, connect_timeout=5, read_timeout=10, addressing_style="path",
        )
        with pytest.raises(ObjectTooLarge):
            store.get("config", max_size=64 * 1024)
        assert store.stats()["bytes_down"] <= 64 * 1024 + 1


def test_a_client_is_made_without_listing_every_service_botocore_knows(monkeypatch):
    """botocore lists ~400 model directories to check that S3's exists (0.08 s of every
    S3 command's start): the store's client asks for S3's alone, and a service that does
    not exist is still refused by name."""
    import botocore.exceptions
    import botocore.loaders
    import botocore.session

    from backupkit.store.s3_boto import _answer_services_lazily, make_client

    def listing(*_a, **_k):
        raise AssertionError("every service listed")

    monkeypatch.setattr(botocore.loaders.Loader, "list_available_services", listing)
    client = make_client("s3:test", "http://127.0.0.1:9", lambda *a, **k: None, profile=None, region=None,
                         addressing_style=None, retries=1, retry_mode="standard", connections=1, connect_timeout=1,
                         read_timeout=1, aws_access_key_id="a", aws_secret_access_key="b", aws_session_token=None,
                         verify=None)
    assert client.meta.service_model.service_name == "s3"
    monkeypatch.undo()
    session = botocore.session.Session()
    _answer_services_lazily(session)
    with pytest.raises(botocore.exceptions.UnknownServiceError):
        session.create_client("no-such-service", region_name="us-east-1")
    assert "s3" in session.get_available_services() and "sts" in list(session.get_available_services())
