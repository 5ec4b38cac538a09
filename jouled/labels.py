"""Label values from outside (spans, inference servers' pages) made safe for Prometheus."""

from __future__ import annotations

import re
from typing import Final

LABEL_MAX_CHARS: Final = 128

# Characters that are always kept; a value made only of them needs no per-character pass.
_SAFE_LABEL: Final = re.compile(r"[\w.:/@+=,;~-]+(?: [\w.:/@+=,;~-]+)*")


def sanitize_label(value: str, max_chars: int = LABEL_MAX_CHARS) -> str:
    """A Prometheus-safe label value: printable, no quotes, backslashes or newlines, cut.

    Scaphandre exported a 4,478-character command line as a label and broke Prometheus;
    labels from the network are untrusted.
    """
    if len(value) <= max_chars and _SAFE_LABEL.fullmatch(value):
        return value  # the common case: nothing to remove, nothing to cut
    return sanitize_label_slow(value, max_chars)


def sanitize_label_slow(value: str, max_chars: int = LABEL_MAX_CHARS) -> str:
    """The character-by-character rule ``sanitize_label`` shortcuts (kept for its tests)."""
    out: list[str] = []
    for ch in value:
        if ch.isprintable() and ch not in "\"'`\\":
            out.append(ch)
            if len(out) >= max_chars:
                break
    return "".join(out).strip()
