"""The system's CA bundle, loaded only where the daemon makes a TLS connection.

aiohttp's client module builds two TLS client contexts when it is imported
(``aiohttp/connector.py``: ``_SSL_CONTEXT_VERIFIED`` and ``_SSL_CONTEXT_UNVERIFIED``, both
through ``set_default_verify_paths``), so every process that imports ``aiohttp.web`` parses
the whole CA bundle twice: 1.9-2.3 MB of the daemon's resident memory (measured on Debian's
~150 certificates), never given back. The daemon serves HTTP and gRPC; its TLS clients are
the server-metrics read of an ``https://`` page and the grid-intensity poller's provider
APIs, each with a context of its own (``verified_context``), made when first needed.
Upstream chose to load the contexts at import so that no event loop blocks on the disk
later (aio-libs/aiohttp#9029).

``import_aiohttp_without_ca_bundle`` imports aiohttp with OpenSSL's default paths pointed
at nothing (``SSL_CERT_FILE``, ``SSL_CERT_DIR``), then puts the environment back as it was.
aiohttp's default verified context then trusts no certificate: a client in this process that
forgot to pass its own context fails the handshake ("certificate verify failed"), it never
connects unverified.
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Final

# OpenSSL reads both at each X509_STORE_set_default_paths: a file that cannot exist, a
# directory that cannot exist.
_NOWHERE: Final = "/nonexistent/jouled-ca-bundle-loaded-where-used"
_VARIABLES: Final = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def import_aiohttp_without_ca_bundle() -> bool:
    """Import ``aiohttp`` (and its client connector) without loading the CA bundle. True
    when this call imported it; False when aiohttp was already imported (nothing changes).
    Call once, early, from the daemon's entry point, before any thread is started: it
    changes ``os.environ`` for the duration of the import."""
    if "aiohttp" in sys.modules:
        return False
    saved = {name: os.environ.get(name) for name in _VARIABLES}
    for name in _VARIABLES:
        os.environ[name] = _NOWHERE
    try:
        import aiohttp.connector  # noqa: F401  (builds its contexts now, with no CAs)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return True


def verified_context() -> ssl.SSLContext:
    """A TLS client context that verifies the peer against the system's CA bundle (or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set), as aiohttp's default would. Reads and
    parses the bundle: tens of milliseconds, so call it off the event loop."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(("http/1.1",))
    return ctx
