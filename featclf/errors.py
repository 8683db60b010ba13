"""How featclf's messages name an option: as a Python parameter, or as a command-line flag.

A message that suggests a way forward ("pass on_error='skip'") must name what the reader can
type. Library code builds such hints with :func:`option`; the ``featclf`` command runs inside
:func:`cli_messages`, under which the same hint reads ``--on-error skip``. One rule maps
parameters to flags (``on_error`` -> ``--on-error``), so the CLI's flags must follow it.

Examples
--------
>>> option("on_error", "skip")
"on_error='skip'"
>>> with cli_messages():
...     option("on_error", "skip")
'--on-error skip'
>>> option("weights", None)
'weights'
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_INTERFACE: contextvars.ContextVar[str] = contextvars.ContextVar("featclf_interface",
                                                                  default="python")

_UNSET = object()


def option(name: str, value: Any = _UNSET) -> str:
    """A parameter (with a value to suggest) as the current interface spells it.

    Parameters
    ----------
    name : str
        The Python parameter name, e.g. ``"on_error"``.
    value : object, optional
        The value to suggest. Booleans become bare flags on the command line
        (``progress=True`` -> ``--progress``).

    Returns
    -------
    str
        ``name=value!r`` in Python, ``--name-with-dashes value`` under :func:`cli_messages`.
    """
    if _INTERFACE.get() == "cli":
        flag = "--" + name.replace("_", "-")
        if value is _UNSET or value is None or value is True:
            return flag
        return f"{flag} {value}"
    if value is _UNSET or value is None:
        return name
    return f"{name}={value!r}"


def in_cli() -> bool:
    """Whether messages are being written for the command line."""
    return _INTERFACE.get() == "cli"


@contextlib.contextmanager
def cli_messages() -> Iterator[None]:
    """Within this block, :func:`option` names command-line flags."""
    token = _INTERFACE.set("cli")
    try:
        yield
    finally:
        _INTERFACE.reset(token)
