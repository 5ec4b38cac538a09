"""jouled/tls.py: the daemon imports aiohttp without parsing the CA bundle, and puts the
environment back; a context of its own still reads the bundle where it is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trustme

PROBE = """
import json, os
from jouled import tls
before = dict(os.environ)
first = tls.import_aiohttp_without_ca_bundle()
import aiohttp.connector as connector
print(json.dumps({
    "first": first,
    "again": tls.import_aiohttp_without_ca_bundle(),
    "environment_unchanged": dict(os.environ) == before,
    "aiohttp_verified_cas": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "aiohttp_unverified_cas": connector._SSL_CONTEXT_UNVERIFIED.cert_store_stats()["x509_ca"],
    "verified_context_cas": tls.verified_context().cert_store_stats()["x509_ca"],
    "SSL_CERT_DIR": os.environ.get("SSL_CERT_DIR"),
}))
"""


def probe(env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_aiohttp_is_imported_with_no_ca_and_the_environment_is_put_back(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    got = probe({**env, "SSL_CERT_FILE": str(bundle)})
    assert got == {
        "first": True,
        "again": False,  # aiohttp was imported: nothing to do
        "environment_unchanged": True,  # the user's SSL_CERT_FILE back, SSL_CERT_DIR unset
        "aiohttp_verified_cas": 0,
        "aiohttp_unverified_cas": 0,
        "verified_context_cas": 1,  # the bundle the user named, read when asked for
        "SSL_CERT_DIR": None,
    }


def test_a_plain_import_of_aiohttp_would_have_read_the_bundle(tmp_path: Path) -> None:
    """The control: the same bundle, aiohttp imported the usual way, loads it twice."""
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    code = (
        "import aiohttp.connector as c; "
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'] "
        "+ c._SSL_CONTEXT_UNVERIFIED.cert_store_stats()['x509_ca'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SSL_CERT_FILE": str(bundle)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(out.stdout) == 2
