"""The test kit: everything tests share that the product must not ship.

    kit             cheap repositories (``make_test_repo``, ``INSECURE_TEST_KDF``), running
                    ``bk`` in a subprocess (``run_bk``, ``cli_env``, ``bk_executable``),
                    tree builders and tree records to compare restores.
    store_contract  the ObjectStore contract suite every backend passes (``StoreContract``).
    faulty          ``FaultyStore``: a wrapper that fails, corrupts or counts on purpose.
    bk              the launcher ``run_bk`` starts: the real CLI with a cheap KDF and
                    short lock waits set through its Python API (``backupkit_cli.context
                    .SETTINGS``), so the shipped ``bk`` reads no test switch.

Nothing in ``backupkit`` or ``backupkit_cli`` imports from here.
"""
