"""check ends with what to run: one table (remedies.py) that docs/recovery.md repeats."""

from __future__ import annotations

import re
from pathlib import Path

from backupkit.managers import check as check_module
from backupkit.managers.check import Finding
from backupkit.managers.remedies import NO_REPAIR, REMEDIES, remedies

ROOT = Path(__file__).resolve().parents[2]


def _doc_table() -> dict[str, tuple[str, ...]]:
    text = (ROOT / "docs" / "recovery.md").read_text()
    section = text.split("## What each finding means and what to run", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.fullmatch(r"\| `([a-z_]+)` \| (error|warning|info) \| [^|]+ \| (.+) \|", line.strip())
        if m:
            out[m.group(1)] = tuple(re.findall(r"`([^`]+)`", m.group(3)))
    return out


def _shown(step: str) -> str:
    return step.replace("{packs}", "ID...").replace("{key}", "ID").replace("{snapshots}", "ID...")


def test_docs_table_is_the_remedies_table():
    doc = _doc_table()
    assert set(doc) == set(REMEDIES)
    for kind, steps in REMEDIES.items():
        assert doc[kind] == tuple(_shown(s) for s in steps), kind


def test_every_finding_kind_of_check_has_a_remedy():
    source = Path(check_module.__file__).read_text()
    kinds = set(re.findall(r'_add\((?:ERROR|WARNING|INFO),\s*"([a-z_]+)"', source))
    kinds |= set(re.findall(r'_mark_bad\([^,()]+,\s*"([a-z_]+)"', source))
    from backupkit.repo import keymanager

    kinds |= {v for k, v in vars(keymanager).items() if k.startswith("KEY_") and isinstance(v, str)}
    assert kinds and kinds <= set(REMEDIES), kinds - set(REMEDIES)
    assert set(NO_REPAIR) <= {k for k, v in REMEDIES.items() if not v}


def _f(kind, obj, message="", severity="error"):
    return Finding(severity, kind, obj, message)


P1, P2 = "ab" * 32, "cd" * 32


def test_steps_run_in_order_with_the_packs_named_once():
    findings = [
        _f("blob_corrupt", "blob " + "00" * 32, f"blob 0000: bad (in pack data/{P1[:2]}/{P1})"),
        _f("pack_size", f"data/{P2[:2]}/{P2}", f"pack data/{P2[:2]}/{P2} is 3 bytes"),
        _f("blob_corrupt", "blob " + "11" * 32, f"blob 1111: bad (in pack data/{P1[:2]}/{P1})"),
        _f("pack_unreferenced", "data/ee/" + "ee" * 32, severity="info"),
    ]
    assert remedies(findings) == [
        "bk repair index",
        f"bk repair packs {P1} {P2}",
        "bk backup <the same paths as before>",
        "bk repair snapshots --forget",
    ]


def test_only_remarks_need_nothing_but_prune():
    assert remedies([_f("read_retry_ok", "data/x", severity="info")]) == []
    assert remedies([_f("pack_unreferenced", "data/x", severity="info")]) == ["bk prune"]
