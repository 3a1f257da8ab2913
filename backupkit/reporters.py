"""``silent``: the do-nothing reporter of a reporter Protocol.

A verb's reporter is a ``typing.Protocol`` whose methods have ``...`` bodies, so a plain
subclass of it already does nothing when called; ``silent(ProgressProtocol)`` is that
subclass, made once per protocol, for the managers' default reporter and for tests.
"""

from __future__ import annotations

from typing import Any

_made: dict[type, type] = {}


def silent(protocol: type) -> type[Any]:
    """The class ``Null<Protocol name>``: a subclass of ``protocol`` that hears nothing."""
    cls = _made.get(protocol)
    if cls is None:
        name = "Null" + protocol.__name__
        doc = f"Hears nothing: {protocol.__name__}'s methods, which do nothing."
        cls = _made[protocol] = type(name, (protocol,), {"__doc__": doc, "__module__": protocol.__module__})
    return cls
