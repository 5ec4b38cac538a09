"""Reading a small file named by the user without trusting what is at the path.

A path in a config can name a FIFO (``open`` would block until a writer comes), a device, or
a file of gigabytes. ``read_small_file`` opens without blocking, refuses anything but a
regular file, and reads at most ``max_bytes``. Stdlib only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# A bearer or API token file: a line of at most a few kB.
MAX_TOKEN_BYTES = 64 * 1024


class FileReadError(ValueError):
    """The file cannot be used; ``str()`` names the path and what to fix."""


def read_small_file(path: Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` of them.

    Raises ``FileReadError`` ("{path}: ..."): cannot open or read it (missing, a directory,
    no permission), not a regular file (a FIFO, socket or device: opened without blocking
    and refused, never read), or longer than ``max_bytes`` (checked before reading and again
    after, for a file that grows). ``what`` names the file in the messages ("config file").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileReadError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device?"
            raise FileReadError(f"{path}: not a regular file ({kind})")
        if st.st_size > max_bytes:
            raise FileReadError(
                f"{path}: {st.st_size} bytes; a {what} may hold at most {max_bytes} bytes"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise FileReadError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:  # grew while being read
        raise FileReadError(f"{path}: a {what} may hold at most {max_bytes} bytes")
    return raw
