"""Regular expressions matched in linear time (google-re2), for patterns from the config.

Python's ``re`` backtracks: ``(a+)+$`` against a process named ``aaaa...ab`` takes time
exponential in its length, and any local user can name a process. RE2 runs in time linear
in the text and refuses what it cannot do that way (backreferences, lookaround); such a
pattern is rejected when the config is loaded, with what to write instead.
"""

from __future__ import annotations

from typing import Any, Protocol

import re2  # type: ignore[import-untyped]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors come back as exceptions, not lines on stderr


class Searcher(Protocol):
    def search(self, text: str) -> Any: ...


def compile_linear(pattern: str) -> Searcher:
    """``pattern`` compiled by RE2; ``ValueError`` naming the problem when RE2 cannot run it
    (backreferences such as ``\\1``, lookahead/lookbehind ``(?=``, ``(?<=``, repetition
    counts over 1000)."""
    try:
        compiled: Searcher = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"not a regular expression jouled can match in linear time (RE2 syntax): {reason}; "
            "backreferences and lookaround are not supported, rewrite without them"
        ) from None
    return compiled
