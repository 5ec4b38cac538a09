"""Whether jouled's optional C extensions may be loaded.

jouled has five, each the twin of a pure-Python function or class kept as its reference and
fallback under the same tests: the OTLP scanner and request selector
(``jouled.ingest._otlpscan``, ``jouled.ingest._roots``), the tick splitter
(``jouled.attribution._split``), the splitter's pending-span record
(``jouled.attribution._pending``) and the tick's process clocks
(``jouled.attribution._proctick``). setup.py builds them where a C compiler is there; the
environment variable ``JOULED_PURE_PYTHON=1`` keeps them unloaded.
"""

from __future__ import annotations

import os


def pure_requested() -> bool:
    """True when ``JOULED_PURE_PYTHON`` is set to anything but empty or ``0``."""
    return os.environ.get("JOULED_PURE_PYTHON", "") not in ("", "0")
