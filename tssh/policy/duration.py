"""Go-style durations (``30s``, ``1h30m``, ``1.5h``), as Tailscale's ``checkPeriod`` takes them.

Tailscale parses ``checkPeriod`` with Go's ``time.ParseDuration``, so tssh accepts exactly that
grammar: an optional sign, then one or more ``<decimal><unit>`` pairs, units ``ns``, ``us``
(``µs``), ``ms``, ``s``, ``m``, ``h``; the bare string ``0`` is also a duration.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_NS = 2**63 - 1


class DurationError(ValueError):
    """The text is not a Go duration."""


def parse_duration(text: str) -> int:
    """Nanoseconds in ``text``; raises DurationError like Go's ``time: invalid duration``."""
    s = text
    negative = False
    if s[:1] in ("+", "-"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f"time: invalid duration {text!r}")
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            if m is None and pos < len(s) and (s[pos].isdigit() or s[pos] == "."):
                raise DurationError(f"time: missing unit in duration {text!r}")
            raise DurationError(f"time: invalid duration {text!r}")
        total += Fraction(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
        if total > _MAX_NS:
            raise DurationError(f"time: invalid duration {text!r}")
    ns = int(total)
    return -ns if negative else ns


def format_duration(ns: int) -> str:
    """Go's ``Duration.String`` for whole seconds and above (``168h0m1s``, ``1m0s``, ``0s``)."""
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns == 0:
        return "0s"
    seconds, rem = divmod(ns, 1_000_000_000)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    frac = f".{rem:09d}".rstrip("0") if rem else ""
    if h:
        return f"{sign}{h}h{m}m{s}{frac}s"
    if m:
        return f"{sign}{m}m{s}{frac}s"
    if s:
        return f"{sign}{s}{frac}s"
    for unit, size in (("ms", 1_000_000), ("\u00b5s", 1_000)):
        if ns >= size:
            return f"{sign}{str(Fraction(ns, size).__float__()).removesuffix('.0')}{unit}"
    return f"{sign}{ns}ns"
