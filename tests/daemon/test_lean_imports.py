"""The daemon imports aiohttp.web without reading the system's MIME type files
(jouled/daemon/lean_imports.py), checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent(
    """
    import json, mimetypes, os, sys
    from jouled.daemon.lean_imports import import_aiohttp_web_without_mime_files
    files = list(mimetypes.knownfiles)
    lean = sys.argv[1] == "lean"
    took = import_aiohttp_web_without_mime_files() if lean else None
    import aiohttp.web
    again = import_aiohttp_web_without_mime_files() if lean else None
    print(json.dumps({
        "took": took,
        "again": again,
        "restored": mimetypes.knownfiles == files,
        "types": len(mimetypes.types_map),
        "builtin": len(mimetypes._types_map_default),
        "system_files": [f for f in files if os.path.isfile(f)],
    }))
    """
)


def _probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_aiohttp_web_is_imported_with_the_builtin_mime_table_only() -> None:
    got = _probe("lean")
    assert (got["took"], got["again"], got["restored"]) == (True, False, True)
    assert got["types"] == got["builtin"]


def test_a_plain_import_reads_the_system_files_where_there_are_any() -> None:
    # The setting matters where the host has /etc/mime.types and the like.
    got = _probe("plain")
    if got["system_files"]:
        assert got["types"] > got["builtin"]
    else:
        assert got["types"] == got["builtin"]
