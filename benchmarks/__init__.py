"""Benchmark harness: backupkit (``bk``) against restic and borg on the same generated data.

Modules: ``datagen`` (deterministic data sets and the 1% change), ``tools`` (locating,
installing and driving each tool), ``measure`` (running one command with wall time, CPU
time, peak memory and a timeout), ``verify`` (comparing restores with the source),
``report`` (Markdown and JSON) and ``run`` (the entry point, ``python -m benchmarks.run``).
"""
