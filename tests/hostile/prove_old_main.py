"""Show that the tests proving issues 9 and 10 fail on the code before that work.

Every numbered item of issue 9 (damage and recovery) and issue 10 (hostile input) is
mapped to the tests that prove it. Each test is run twice, in a subprocess: against this
checkout, and with ``BK_TEST_OLD_CHECKOUT`` pointing at a checkout of the old main, which
makes ``tests.support.kit.bk_executable`` and ``installed_bk`` run the OLD ``bk`` (the
test itself, and whatever repository it forges through the engine API, stay new: the
repository format did not change). A proof holds when the test passes now and fails on
the old code. Items that only engine-level tests cover, or that the old code cannot even
express, say why in their row.

    python -m tests.hostile.prove_old_main --setup          # make /work/wt/oldmain (5cc126d)
    python -m tests.hostile.prove_old_main [ITEM...]        # run, print the markdown table
    python -m tests.hostile.prove_old_main --remove         # remove the old worktree

Run from the repository root with the checkout's venv; the old checkout gets a copy of it
(``--setup``). docs/proofs.md holds the last table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

OLD_COMMIT = "5cc126d"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OLD = Path("/work/wt/oldmain")


@dataclass
class Proof:
    item: str
    claim: str
    tests: list[str] = field(default_factory=list)
    note: str = ""  # why the old code cannot run the test, or what the failure shows


C = "tests/hostile/test_corpus.py::test_sample"
E = "tests/cli/test_proofs_cli.py::"
PROOFS: list[Proof] = [
    # -- issue 10: hostile input --------------------------------------------------------
    Proof("10.1", "key files with unbounded KDF costs are skipped", [
        "tests/test_hostile_keys.py::test_cli_reports_skipped_key_files_with_v",
        "tests/test_hostile_keys.py::test_cli_only_a_damaged_key_file",
        "tests/hostile/test_sizes.py::test_a_huge_key_file_is_skipped",
    ]),
    Proof("10.2", "objects larger than their kind allows are refused unread; no traceback escapes", [
        "tests/hostile/test_sizes.py::test_a_2_gib_config_is_refused_unread",
        "tests/hostile/test_sizes.py::test_a_4_gib_lock_is_an_unreadable_lock",
    ]),
    Proof("10.3", "junk names in the store are ignored with a warning", [
        "tests/hostile/test_junk_names.py",
    ]),
    Proof("10.4", "zstd bombs are refused before inflating", [
        "tests/hostile/test_sizes.py::test_a_zstd_bomb_sealed_with_the_keys",
        "tests/hostile/test_sizes.py::test_a_zstd_bomb_as_a_data_blob_is_damage_not_an_allocation",
    ]),
    Proof("10.5", "HAMT shape validated; check reports malformed tries", [
        "tests/test_hamt_shape.py::test_check_reports_a_repeated_child_as_damage",
        E + "test_a_5000_deep_trie_chain_is_one_line",
    ]),
    Proof("10.6", "a malformed entry is named and skipped, the rest restored", [
        E + "test_malformed_entries_are_named_and_the_rest_restored",
    ]),
    Proof("10.7", "a name reused in a snapshot cannot make tar write outside", [
        E + "test_a_reused_name_cannot_write_outside_through_tar",
    ]),
    Proof("10.8", "the snapshot's / entry is not applied to an existing --target", [
        E + "test_an_existing_target_keeps_its_mode",
    ]),
    Proof("10.9", "empty passwords refused without --insecure-no-password", [
        "tests/cli/test_init_validation.py::test_init_refuses_an_empty_password",
        "tests/cli/test_init_validation.py::test_key_add_and_passwd_refuse_an_empty_password",
    ]),
    Proof("10.10", "terminal escapes in names are printed escaped", [
        E + "test_ls_and_diff_print_terminal_escapes_escaped",
    ], "test_output's escape tests also use options 5cc126d lacked (snapshots --json)"),
    Proof("10.11", "no environment switch lowers the installed bk's security", [
        "tests/cli/test_cli_errors.py::test_installed_bk_obeys_no_test_switch",
    ]),
    Proof("10.12", "init --pack-size minimum; cat with bad ids", [
        "tests/cli/test_init_validation.py::test_init_validates_its_options_before_writing",
        "tests/cli/test_init_validation.py::test_cat_with_a_bad_id_is_a_usage_error",
        "tests/cli/test_init_validation.py::test_cat_of_a_missing_or_damaged_key",
    ]),
    Proof("10.13", "restore --no-owner / --no-special as root", [
        "tests/cli/test_restore_options_cli.py::test_no_owner_gives_files_to_the_user_and_drops_setuid",
        "tests/cli/test_restore_options_cli.py::test_no_special_skips_devices_and_fifos",
    ], "the options did not exist on 5cc126d (exit 2); the default (restore as the snapshot says) is unchanged"),
    # -- issue 9: damage and recovery ---------------------------------------------------
    Proof("9.1", "restore never hides a loss after a damaged tree node", [
        "tests/managers/test_restore_damage.py::test_bk_restore_ends_an_incomplete_restore_with_one_line_and_exit_1",
    ]),
    Proof("9.2", "bk repair index, packs, snapshots; check names the steps", [
        "tests/cli/test_repair_cli.py::test_check_names_the_steps_and_following_them_ends_clean",
        "tests/cli/test_repair_cli.py::test_a_damaged_index_object_is_a_warning_not_a_failure",
    ], "bk repair did not exist on 5cc126d; one damaged index object failed every command"),
    Proof("9.3", "backup never builds on lost data", [
        E + "test_a_backup_after_a_lost_data_pack_is_restorable",
    ]),
    Proof("9.4", "read-only repositories can be read", [
        E + "test_snapshots_on_a_read_only_repository_with_a_stale_catalog",
        "tests/cli/test_read_only.py::test_ls_restore_diff_check_with_no_lock",
    ], "--no-lock (for ls, restore, diff, check) did not exist on 5cc126d (exit 2)"),
    Proof("9.5", "a damaged key file is not hidden by the cache", [
        E + "test_check_finds_a_damaged_key_file_the_cache_hides",
    ]),
    Proof("9.6", "a deleted snapshot object is a finding", [
        E + "test_check_finds_a_deleted_snapshot_object",
        "tests/cli/test_cli_errors.py::test_corrupt_snapshot_is_named",
    ]),
    Proof("9.7", "a file that shrinks during backup gets no invented zeros", [
        E + "test_a_file_that_shrinks_after_lstat_is_stored_as_read",
    ]),
    Proof("9.8", "SIGTERM/SIGHUP release the lock, exit 143/129", [
        "tests/cli/test_signals.py::test_sigterm_json_line_and_the_lock_is_gone",
        "tests/cli/test_signals.py::test_sighup_exits_129",
    ]),
    Proof("9.9", "a full cache leaks no temporary files and warns once", [
        E + "test_a_full_cache_leaks_no_temporary_files",
    ]),
    Proof("9.10", "smaller: restore onto a full disk; unlock's advice; prune after a killed first backup", [
        E + "test_restore_onto_a_full_disk_stops_with_one_message",
        E + "test_unlock_removes_an_unreadable_lock",
        E + "test_prune_removes_the_packs_of_a_killed_first_backup",
    ]),
]


def setup(old: Path) -> None:
    """A detached worktree of OLD_COMMIT at ``old`` with a copy of this venv."""
    if not old.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), OLD_COMMIT], check=True)
    venv = ROOT / ".venv"
    if not (old / ".venv").exists():
        shutil.copytree(venv, old / ".venv", symlinks=True)
        for p in (old / ".venv" / "bin").iterdir():
            if p.is_file() and not p.is_symlink():
                try:
                    text = p.read_text()
                except UnicodeDecodeError:
                    continue
                first, sep, rest = text.partition("\n")
                if first.startswith("#!") and first.endswith("/bin/python"):  # a script of some venv
                    first = f"#!{old / '.venv' / 'bin' / 'python'}"
                p.write_text((first + sep + rest).replace(str(venv), str(old / ".venv")))
    subprocess.run([str(old / ".venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-e", "."],
                   cwd=old, check=True)


def remove(old: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True)


def run_tests(tests: list[str], old: Path | None) -> dict[str, tuple[str, str]]:
    """{test id: (outcome, first line of the reason)} of one pytest run."""
    import tempfile
    import xml.etree.ElementTree as ET

    env = {k: v for k, v in os.environ.items() if k != "BK_TEST_OLD_CHECKOUT"}
    if old is not None:
        env["BK_TEST_OLD_CHECKOUT"] = str(old)
    with tempfile.TemporaryDirectory() as d:
        xml = Path(d) / "r.xml"
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
             f"--junitxml={xml}", *tests],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        if not xml.exists():
            tail = (r.stdout + r.stderr).strip().splitlines()
            return {"(collection)": ("error", tail[-1][:200] if tail else "")}
        tree = ET.parse(xml)
    out: dict[str, tuple[str, str]] = {}
    for case in tree.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome, why = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                why = " ".join((el.get("message") or "").split())[:200]
                break
        out[name] = (outcome, why)
    return out


def summarize(results: dict[str, tuple[str, str]]) -> str:
    counts: dict[str, int] = {}
    for outcome, _ in results.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("items", nargs="*", help="item numbers (e.g. 10.7 9.1); default all")
    ap.add_argument("--old", type=Path, default=DEFAULT_OLD, help="the old checkout (default %(default)s)")
    ap.add_argument("--setup", action="store_true", help=f"make the old checkout of {OLD_COMMIT} and its venv")
    ap.add_argument("--remove", action="store_true", help="remove the old checkout's worktree")
    ap.add_argument("--details", action="store_true", help="print each test's outcome and reason")
    a = ap.parse_args()
    if a.setup:
        setup(a.old)
        return
    if a.remove:
        remove(a.old)
        return
    if not (a.old / ".venv" / "bin" / "bk").exists():
        sys.exit(f"no old checkout with a venv at {a.old}: run with --setup first")
    rows = [p for p in PROOFS if not a.items or p.item in a.items]
    print("| item | claim | tests | on " + OLD_COMMIT + " | now |")
    print("|---|---|---|---|---|")
    holds = 0
    for p in rows:
        now = run_tests(p.tests, None)
        before = run_tests(p.tests, a.old)
        ok = all(o == "passed" for o, _ in now.values()) and any(o in ("failed", "error") for o, _ in before.values())
        holds += ok
        names = "<br>".join(t.split("::")[-1] if "::" in t else t for t in p.tests)
        note = f" ({p.note})" if p.note else ""
        print(f"| {p.item} | {p.claim}{note} | {names} | {summarize(before)} | {summarize(now)} |", flush=True)
        if a.details:
            for k, (o, why) in sorted(before.items()):
                print(f"    old {o:7} {k} {why}", file=sys.stderr)
            for k, (o, why) in sorted(now.items()):
                if o != "passed":
                    print(f"    now {o:7} {k} {why}", file=sys.stderr)
    print(f"\n{holds} of {len(rows)} items hold: every test passes now and at least one fails on {OLD_COMMIT}.")


if __name__ == "__main__":
    main()
