"""Shared pytest fixtures. Each section belongs to one layer; append yours below."""

# ---- S3 servers (store layer; implementation and docs in tests/conftest_s3.py) ----------
from tests.conftest_s3 import moto_s3, s3_fault_proxy, s3_server, s3_store  # noqa: F401

# ---- REST / rclone / SFTP servers (remote backends; tests/conftest_backends.py) -----------
from tests.conftest_backends import bk_server, rclone_server, ssh_server, start_bk_server  # noqa: F401,E402
