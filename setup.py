"""Build glue: the C extensions (chunker, blob opener, index loops, directory scan,
parent match, blob sealer) and the CLI package's import name.

Everything else lives in pyproject.toml. The CLI source folder is ``cli/`` and it is
installed as the package ``backupkit_cli`` (a bare ``cli`` would collide with others).
"""

from setuptools import Extension, setup

setup(
    packages=[
        "backupkit",
        "backupkit.store",
        "backupkit.repo",
        "backupkit.chunker",
        "backupkit.managers",
        "backupkit.mount",
        "backupkit.objects",
        "backupkit.serve",
        "backupkit_cli",
        "backupkit_cli.commands",
    ],
    package_dir={"backupkit_cli": "cli"},
    package_data={"backupkit.chunker": ["*.pyi"]},
    ext_modules=[
        Extension(
            "backupkit.chunker._cdc",
            sources=["backupkit/chunker/_cdc.c"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "backupkit._dirscan",
            sources=["backupkit/_dirscan.c"],
            depends=["backupkit/_listing.h"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "backupkit._hamtleaf",
            sources=["backupkit/_hamtleaf.c"],
            depends=["backupkit/_mpread.h"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "backupkit._parentmatch",
            sources=["backupkit/_parentmatch.c"],
            depends=["backupkit/_listing.h", "backupkit/_mpread.h"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "backupkit.repo._indexops",
            sources=["backupkit/repo/_indexops.c"],
            depends=["backupkit/_mpread.h"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "backupkit.repo._blobopen",
            sources=["backupkit/repo/_blobopen.c"],
            depends=["backupkit/repo/_libcrypt.h"],
            extra_compile_args=["-O2"],
        ),
        Extension(
            "backupkit.repo._blobseal",
            sources=["backupkit/repo/_blobseal.c"],
            depends=["backupkit/repo/_libcrypt.h"],
            extra_compile_args=["-O2"],
        ),
    ],
)
