"""``bk`` for the test suite: the real command line with test-only settings.

Run as a script (``python tests/support/bk.py ARGS``, or through the executable wrapper
``kit.bk_executable()`` returns) or as ``python -m tests.support.bk ARGS`` from the
repository root. It sets, through the CLI's Python API (``backupkit_cli.context.SETTINGS``):

- new key files use ``INSECURE_TEST_KDF`` (t=1, 64 KiB) instead of the strong default;
- lock waits are ten times shorter (recheck 20 ms, retry backoff 0.2 s to 1 s): the same
  protocol, faster.

then hands over to ``backupkit_cli.main.run()``. The installed ``bk`` never does this:
no environment variable lowers its security or changes its timings.
"""

from __future__ import annotations

from backupkit.repo.keys import KdfParams

#: Cheap Argon2id parameters for tests only (restic's TestUseLowSecurityKDFParameters).
#: ``tests.support.kit`` re-exports it; defined here so the launcher imports no test module.
INSECURE_TEST_KDF = KdfParams(iterations=1, memory_kib=64, lanes=1)

LOCK_RECHECK_DELAY = 0.02
LOCK_RETRY_BACKOFF = (0.2, 1.0)


def main() -> None:
    from backupkit_cli import context
    from backupkit_cli.main import run

    context.SETTINGS.kdf = INSECURE_TEST_KDF
    context.SETTINGS.lock_recheck_delay = LOCK_RECHECK_DELAY
    context.SETTINGS.lock_retry_backoff = LOCK_RETRY_BACKOFF
    run()


if __name__ == "__main__":
    main()
