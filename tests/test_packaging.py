"""What ``pip install .`` gets: botocore as a dependency (s3: works without extras), an
SPDX license string (no setuptools deprecation pages), an ``s3`` extra kept for old
install lines, and no test kit inside the product."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_botocore_is_a_dependency_and_the_s3_extra_still_exists():
    meta = project()["project"]
    assert any(dep.replace(" ", "").startswith("botocore>=") for dep in meta["dependencies"])
    assert not any(dep.replace(" ", "").startswith("boto3") for dep in meta["dependencies"])
    assert meta["optional-dependencies"]["s3"] == []


def test_license_is_an_spdx_string():
    meta = project()
    assert meta["project"]["license"] == "MIT"
    assert any(req.replace(" ", "").startswith("setuptools>=77") for req in meta["build-system"]["requires"])


def test_no_test_kit_in_the_product():
    packages = ROOT / "backupkit", ROOT / "cli"
    files = [p for pkg in packages for p in pkg.rglob("*.py")]
    assert files
    assert not [p for p in files if p.name.startswith("testing") or p.name == "faulty.py"]
    for p in files:
        text = p.read_text()
        assert "BK_TEST" not in text, p
        assert "from tests" not in text and "import tests" not in text, p


def test_managers_reach_the_store_only_through_the_content_layer():
    """docs/architecture.md: ``repo/`` is the only door to the store and the cache."""
    import re

    files = [*(ROOT / "backupkit" / "managers").rglob("*.py"), ROOT / "backupkit" / "snapshot.py"]
    assert len(files) > 10
    # repo.store / repo.cache however used (a call, an attribute, passed on, kept in a
    # local), not the module backupkit.repo.cache nor names that only start so
    reach = re.compile(r"(?:^|[^\w.]|\bself\.)repo\.(store|cache)\b")
    offenders = [f"{p.name}:{n}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1) if reach.search(line)]
    assert offenders == []
