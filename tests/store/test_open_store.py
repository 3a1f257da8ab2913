"""The backend registry: location forms, unknown schemes, ``-o`` options, default
connections, capabilities, and the missing-package message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backupkit.errors import BadArgument, StorePermissionError, UsageError
from backupkit.store import (
    SCHEMES,
    Backend,
    BackendOption,
    LocalObjectStore,
    MemoryObjectStore,
    default_connections,
    open_location,
    open_store,
    resolve,
)
from backupkit.store.s3 import S3ObjectStore, parse_url
from backupkit.store.s3_boto import POOL_HEADROOM


@pytest.mark.parametrize(
    "url",
    ["{p}", "file:{p}", "file://{p}"],
)
def test_local_forms(tmp_path, url):
    store = open_store(url.format(p=tmp_path / "repo"))
    assert isinstance(store, LocalObjectStore)
    assert store.root == str(tmp_path / "repo")


@pytest.mark.parametrize(
    "url, root",
    [
        ("./backup:2024", "backup:2024"),
        ("local:backup:2024", "backup:2024"),
        ("local:./repo", "repo"),
        ("a/b:c", "a/b:c"),
        ("2024:backup", "2024:backup"),  # a scheme starts with a letter
        ("-x:y", "-x:y"),
        ("{tmp}/srv/a:b", "{tmp}/srv/a:b"),
        ("local:{tmp}/srv/a:b", "{tmp}/srv/a:b"),
        ("file:{tmp}/x:y", "{tmp}/x:y"),
    ],
)
def test_paths_with_colons_stay_local(tmp_path, monkeypatch, url, root):
    monkeypatch.chdir(tmp_path)
    store = open_store(url.format(tmp=tmp_path))
    assert isinstance(store, LocalObjectStore)
    assert store.root == str(tmp_path / root.format(tmp=tmp_path))


@pytest.mark.parametrize(
    "url",
    [
        "b2:bucket/path",
        "azure:container/path",
        "gs:bucket/path",
        "swift:container/path",
        "backup:2024",
        "S3:bucket/prefix",  # schemes are case-sensitive, as in restic
        "s4:bucket",
    ],
)
def test_unknown_scheme_is_an_error(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadArgument) as info:
        open_store(url)
    msg = str(info.value)
    assert "unknown repository scheme" in msg and url.split(":")[0] + ":" in msg
    for scheme in SCHEMES:
        assert f"{scheme}:" in msg
    assert f"./{url}" in msg  # how to mean a local path
    assert "\n" not in msg
    assert list(tmp_path.iterdir()) == [], "nothing created"


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
    assert store._client.meta.config.max_pool_connections == 3 + POOL_HEADROOM  # --connections 3


def test_an_s3_profile_that_does_not_exist_is_named_before_any_request(tmp_path, monkeypatch):
    """``-o s3.profile=NAME`` for a profile the AWS files lack: the first use says so (the
    client, made on first use, checks the profile as boto3's session did)."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    store = open_store("s3:http://127.0.0.1:9/bucket1/prefix", profile="nosuch", retries=1)
    with pytest.raises(StorePermissionError, match="no usable AWS credentials.*nosuch"):
        store.exists("config")
    assert store.stats()["HEAD"] == 0  # nothing was sent


def test_an_s3_store_imports_botocore_not_boto3():
    """boto3's import adds ~0.1 s (s3transfer, its resource layer) to every S3 command's
    start and nothing the store uses; a fresh process that opens an S3 store has neither."""
    code = (
        "import sys\n"
        "from backupkit.store import open_store\n"
        "store = open_store('s3:http://127.0.0.1:9/bkt/prefix', aws_access_key_id='a', aws_secret_access_key='b')\n"
        "print(type(store._client).__module__, sorted(m for m in ('boto3', 's3transfer') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["botocore.client", "[]"]


def test_unknown_option_is_a_usage_error():
    with pytest.raises(UsageError, match="bad option"):
        open_store("memory:", colour="blue")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "botocore", None)  # any botocore.x import now fails on "botocore"
    for name in [m for m in sys.modules if m == "backupkit.store.s3" or m.startswith("backupkit.store.s3_")]:
        monkeypatch.delitem(sys.modules, name)  # s3.py and the modules beside it that import botocore
    with pytest.raises(UsageError, match=r"s3: backend needs the Python package botocore: pip install botocore"):
        open_store("s3:bucket/prefix")


# -- the registry and each backend's declaration --------------------------------------------

@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_registered_scheme_declares_a_backend(scheme):
    backend, location = resolve(f"{scheme}:rest")
    assert location == "rest"
    assert isinstance(backend, Backend) and callable(backend.open)
    assert backend.name and backend.connections >= 1 and backend.forms
    names = [opt.name for opt in backend.options]
    assert len(names) == len(set(names))
    for opt in backend.options:
        assert isinstance(opt, BackendOption) and opt.help and callable(opt.parse)


def test_plain_path_and_local_share_a_backend():
    assert resolve("/srv/x")[0] is resolve("local:/srv/x")[0] is resolve("file:/srv/x")[0]


def test_default_connections_come_from_the_backend():
    assert default_connections("s3:bkt/p") == 8
    assert default_connections("/srv/repo") == 2
    store = open_location("s3:http://127.0.0.1:9/bkt")
    assert store._client.meta.config.max_pool_connections == 8 + POOL_HEADROOM
    store = open_location("s3:http://127.0.0.1:9/bkt", connections=3)
    assert store._client.meta.config.max_pool_connections == 3 + POOL_HEADROOM  # --connections 3


def test_text_options_are_parsed_by_the_backend():
    store = open_location(
        "s3:http://127.0.0.1:9/bkt",
        ["s3.retries=3", "s3.part_size=5MiB", " s3.verify = false ", "s3.read_timeout=1.5"],
    )
    assert store._backoff.attempts == 3 and store._part_size == 5 * 1024 * 1024
    assert store._client_args["verify"] is False and store._client_args["read_timeout"] == 1.5
    s3 = resolve("s3:b")[0]
    assert s3.parse_options(["s3.verify=/etc/ca.pem", "s3.multipart_threshold=64M"]) == {
        "verify": "/etc/ca.pem",
        "multipart_threshold": 64 * 1024 * 1024,
    }


@pytest.mark.parametrize(
    "url, text, words",
    [
        ("s3:b", "retries=3", "use -o s3.region=VALUE"),
        ("s3:b", "s3.retries", "use -o"),
        ("s3:b", ".retries=3", "use -o"),
        ("s3:b", "s3.=3", "use -o"),
        ("s3:b", "s3.colour=blue", "unknown option s3.colour (known: s3.region, s3.profile"),
        ("s3:b", "s3.retries=many", "bad value for s3.retries"),
        ("s3:b", "s3.retries=0", "bad value for s3.retries"),
        ("s3:b", "s3.part_size=lots", "bad value for s3.part_size"),
        ("s3:b", "s3.retry_mode=eager", "bad value for s3.retry_mode"),
        ("s3:b", "s3.backoff=-1", "bad value for s3.backoff"),
        ("s3:b", "local.fsync=0", "the repository is a s3 one"),
        ("/srv/repo", "s3.retries=3", "the repository is a local one; its options: none"),
        ("memory:", "memory.x=1", "unknown option memory.x (known: none)"),
    ],
)
def test_bad_text_options_are_bad_arguments(url, text, words):
    with pytest.raises(BadArgument) as info:
        resolve(url)[0].parse_options([text])
    assert words in str(info.value) and text in str(info.value)


def test_a_new_backend_is_one_module_and_one_line(monkeypatch, tmp_path):
    """A backend registered by one SCHEMES line gets its locations, options and default
    connections through the command line's code without any change there."""
    import types

    from backupkit_cli.context import State

    opened = []

    def open_toy(location, *, connections, colour="white"):
        opened.append((location, connections, colour))
        return MemoryObjectStore()

    module = types.ModuleType("toy_backend")
    module.BACKEND = Backend(
        name="toy", open=open_toy, forms=("toy:NAME",), connections=5,
        options=(BackendOption("colour", str.upper, "the toy's colour"),),
    )
    monkeypatch.setitem(sys.modules, "toy_backend", module)
    monkeypatch.setitem(SCHEMES, "toy", "toy_backend")
    st = State(repo="toy:box", options=["toy.colour=red"])
    assert isinstance(st.open_store(), MemoryObjectStore)
    assert opened == [("box", 5, "RED")]
    assert st.store_stats() is None  # the memory store counts nothing
    st = State(repo="toy:box", connections=1, options=["s3.retries=3"])
    with pytest.raises(BadArgument, match="the repository is a toy one"):
        st.open_store()


def test_capabilities_have_defaults_in_the_contract(tmp_path):
    memory = MemoryObjectStore()
    assert memory.stats() is None and memory.request_bytes == 0
    assert memory.probe_conditional_writes() is True and memory.atomic_put_if_absent is True
    local = LocalObjectStore(tmp_path)
    assert local.probe_conditional_writes() is True
    assert local.stats()["PUT"] == 0


def test_the_cli_names_no_backend():
    import backupkit_cli.context as context
    import backupkit_cli.main as main

    for module in (context, main):
        with open(module.__file__, encoding="utf-8") as f:
            text = f.read()
        for word in ("s3:", "s3.", '"s3"', "local:", "memory:", "getattr("):
            assert word not in text, f"{module.__name__} names {word!r}"
