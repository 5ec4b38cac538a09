"""Imports of the daemon's libraries without the tables it never reads.

``aiohttp.web`` builds a ``mimetypes.MimeTypes`` at import (for ``FileResponse``), which runs
``mimetypes.init()``: it reads every file of ``mimetypes.knownfiles`` (``/etc/mime.types``:
~2,300 lines on Debian) into the module's global tables, ~0.3 MB of dicts and strings kept
for the process's life. The daemon serves no files (its responses set their own content
types), so it imports ``aiohttp.web`` with Python's built-in table only: 0.2-0.55 MB less
resident (3 fresh interpreters each way, ``import jouled.daemon.service``).
"""

from __future__ import annotations

import mimetypes
import sys


def import_aiohttp_web_without_mime_files() -> bool:
    """Import ``aiohttp.web`` with ``mimetypes`` initialised from its built-in table only.
    True when this call imported it; False when ``aiohttp.web`` or the ``mimetypes`` tables
    were already there (nothing changes). Call once, early, from the daemon's entry point;
    ``mimetypes.knownfiles`` is restored afterwards."""
    if "aiohttp.web" in sys.modules or mimetypes.inited:
        return False
    saved = mimetypes.knownfiles
    mimetypes.knownfiles = []
    try:
        import aiohttp.web  # noqa: F401  (its MimeTypes() runs mimetypes.init() now)
    finally:
        mimetypes.knownfiles = saved
    return True
