"""Pattern files: the text behind ``--exclude-file`` and ``--iexclude-file``.

Pattern files (``--exclude-file``): one pattern a line, surrounding white space dropped,
blank lines and lines starting with ``#`` ignored, ``$VAR``/``${VAR}`` replaced from the
environment (``$$`` is a literal ``$``); no ``~`` expansion (restic has none either).
Text files are read as restic's ``textfile.Read`` takes them (``decode_text``). The
patterns themselves are compiled in ``filters.py``.
"""

from __future__ import annotations

import os
import re

from backupkit.errors import BadArgument

_SHELL_SPECIAL = set("*#$@!?-0123456789")


def expand_env(text: str, getenv=os.environ.get) -> str:
    """``$VAR`` and ``${VAR}`` from the environment (unset: empty), ``$$`` -> ``$``.

    The rules are those of Go's ``os.Expand`` that restic applies to pattern files: a
    ``$`` not followed by a name stays; ``${`` without a closing brace and ``${}`` are
    dropped; the shell's one-character names (``$1``, ``$*``, ...) are looked up too.
    """
    if "$" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 == n:
            out.append(c)
            i += 1
            continue
        rest = text[i + 1 :]
        if rest[0] == "{":
            if len(rest) > 2 and rest[1] in _SHELL_SPECIAL and rest[2] == "}":
                name, width = rest[1], 3
            else:
                close = rest.find("}")
                if close == 1:
                    name, width = "", 2  # "${}": dropped
                elif close < 0:
                    name, width = "", 1  # "${" without "}": dropped
                else:
                    name, width = rest[1:close], close + 1
            if name:
                out.append("$" if name == "$" else getenv(name, ""))
            i += 1 + width
            continue
        if rest[0] in _SHELL_SPECIAL:
            out.append("$" if rest[0] == "$" else getenv(rest[0], ""))
            i += 2
            continue
        m = re.match(r"[A-Za-z0-9_]*", rest)
        name = m.group(0) if m else ""
        if name:
            out.append(getenv(name, ""))
        else:
            out.append("$")
        i += 1 + len(name)
    return "".join(out)


def decode_text(data: bytes) -> str:
    """A text file as restic's textfile.Read takes it: UTF-8, or UTF-16 with a BOM."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8", "surrogateescape")


def read_pattern_file(path: str, option: str = "--exclude-file") -> list[str]:
    """The patterns of one pattern file (see the module docstring for the format)."""
    try:
        with open(path, "rb") as f:
            text = decode_text(f.read())
    except OSError as e:
        raise BadArgument(f"cannot read {option} {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadArgument(f"cannot read {option} {path}: {e.reason}") from None
    patterns = []
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(expand_env(line))
    return patterns
