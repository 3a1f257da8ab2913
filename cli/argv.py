"""Global options anywhere on the command line (``bk snapshots --json`` as ``bk --json snapshots``).

restic, borg and kopia take their global options before or after the command; click
only before it. :func:`hoist_global_options` rewrites the argument list so that every
global option found after the command name (with its value) moves in front of it, and
click then parses it as usual. The global options are those the root group itself
declares: nothing here lists them, so there is one definition of each (``main.py``).

Rules, in order, for each token after the command name:

- ``--`` ends the options: it and everything after it stay where they are.
- An option the command (or a sub-group on the way to it, e.g. ``key``) declares
  itself stays with the command, together with its value: a command's own ``--tag``
  or ``-n`` is never taken for a global one, and the value of a command's option is
  never looked at (``bk backup --exclude -v DIR`` excludes ``-v``).
- A global option moves in front of the command with its value (the next token, or the
  rest of the token: ``--repo=R``, ``-rR``). Bundled short flags are split between the
  two (``-lv`` on ``ls``: ``-l`` stays, ``-v`` moves).
- Anything else (arguments, unknown options) stays for click to judge.

Hoisted options go after those already given before the command, so for a single-valued
option the one written last still wins, as click does with repeats.
"""

from __future__ import annotations

from typing import Any


class _Specs:
    """The options of one click command: name -> number of values it takes (0 = flag)."""

    def __init__(self, params: list[Any]) -> None:
        self.values: dict[str, int] = {}
        for p in params:
            if getattr(p, "param_type_name", "") != "option":
                continue
            takes = 0 if (getattr(p, "is_flag", False) or getattr(p, "count", False)) else max(1, p.nargs)
            for name in [*p.opts, *p.secondary_opts]:
                self.values[name] = takes

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def takes(self, name: str) -> int:
        return self.values[name]


def hoist_global_options(group: Any, args: list[str]) -> list[str]:
    """``args`` (without the program name) with global options moved before the command."""
    globals_ = _Specs(group.params)
    i = _skip_options(globals_, args, 0)
    if i >= len(args):
        return list(args)
    cmd, own = group.commands.get(args[i]), _Specs([])
    j = i + 1
    # Walk down sub-groups (bk key list ...): their options are the command's own too.
    while cmd is not None and hasattr(cmd, "commands"):
        own.values.update(_Specs(cmd.params).values)
        k = _skip_options(own, args, j)
        if k >= len(args) or args[k] not in cmd.commands:
            break
        cmd, j = cmd.commands[args[k]], k + 1
    if cmd is None:
        return list(args)  # an unknown command: let click say so
    own.values.update(_Specs(cmd.params).values)
    hoisted, kept = _split(args[i + 1 :], globals_, own)
    return [*args[:i], *hoisted, args[i], *kept]


def _skip_options(specs: _Specs, args: list[str], i: int) -> int:
    """Index of the first token at or after ``i`` that is not one of ``specs``' options
    or an option value (the command name, when ``specs`` are a group's)."""
    while i < len(args):
        a = args[i]
        if a == "--" or not a.startswith("-") or a == "-":
            return i
        i += 1 + _value_tokens(specs, a)
    return i


def _value_tokens(specs: _Specs, token: str) -> int:
    """How many following tokens ``token`` (an option of ``specs``, or unknown) consumes."""
    if token.startswith("--"):
        name, eq, _ = token.partition("=")
        return specs.takes(name) if name in specs and not eq else 0
    for pos in range(1, len(token)):
        name = "-" + token[pos]
        if name not in specs:
            return 0
        if specs.takes(name):
            return specs.takes(name) if pos == len(token) - 1 else 0
    return 0


def _split(rest: list[str], globals_: _Specs, own: _Specs) -> tuple[list[str], list[str]]:
    hoisted: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            kept.extend(rest[i:])
            break
        if a.startswith("--"):
            name, eq, _ = a.partition("=")
            if name in own or name not in globals_:
                n = own.takes(name) if name in own and not eq else 0
                kept.extend(rest[i : i + 1 + n])
            else:
                n = globals_.takes(name) if not eq else 0
                hoisted.extend(rest[i : i + 1 + n])
            i += 1 + n
            continue
        if a.startswith("-") and a != "-":
            n = _split_short(a, rest[i + 1 :], globals_, own, hoisted, kept)
            i += 1 + n
            continue
        kept.append(a)
        i += 1
    return hoisted, kept


def _split_short(
    token: str, following: list[str], globals_: _Specs, own: _Specs, hoisted: list[str], kept: list[str]
) -> int:
    """Distribute a short-option token (``-v``, ``-qv``, ``-rPATH``, ``-r PATH``) between
    ``hoisted`` and ``kept``; returns how many following tokens it consumed as values.

    A character the command declares belongs to the command, otherwise to the globals if
    they declare it. The first character that takes a value ends the bundle: the rest of
    the token, or else the next token(s), is its value. A character nobody declares leaves
    the rest of the token, untouched, to the command (click reports it).
    """
    for pos in range(1, len(token)):
        name = "-" + token[pos]
        if name in own:
            specs, dest = own, kept
        elif name in globals_:
            specs, dest = globals_, hoisted
        else:
            kept.append("-" + token[pos:])
            return 0
        n = specs.takes(name)
        if not n:
            dest.append(name)
            continue
        if pos < len(token) - 1:
            dest.append(name + token[pos + 1 :])
            return 0
        dest.append(name)
        dest.extend(following[:n])
        return min(n, len(following))
    return 0
