"""The interpreter the daemon benchmarks run jouled on (``daemon_cpu --python``)."""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from pathlib import Path

import pytest

from benchmarks._util import daemon, interpreter


def _wrapper(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_this_interpreter_is_described_as_it_is() -> None:
    info = interpreter(sys.executable)
    assert info["version"] == platform.python_version()
    assert info["implementation"] == platform.python_implementation()
    assert info["compiler"] == platform.python_compiler()
    args = sysconfig.get_config_var("CONFIG_ARGS") or ""
    assert info["configure_enable_optimizations"] is ("--enable-optimizations" in args)
    assert info["configure_with_lto"] is ("--with-lto" in args)
    with open("/proc/self/maps") as fh:
        assert info["libpython_shared"] is any("libpython" in line for line in fh)


def test_an_interpreter_without_the_daemons_packages_is_refused_with_what_to_do(
    tmp_path: Path,
) -> None:
    # The same interpreter, isolated from its site-packages: aiohttp and grpc are not there.
    bare = _wrapper(tmp_path, f'exec "{sys.executable}" -I -S "$@"')
    with pytest.raises(RuntimeError, match=r"lacks jouled's dependencies \(aiohttp") as err:
        interpreter(bare)
    assert "pip install -e ." in str(err.value)


def test_an_interpreter_that_cannot_load_the_checkouts_extensions_is_refused(
    tmp_path: Path,
) -> None:
    # A checkout whose extension was built for another Python (here: not a library at all):
    # the daemon would import its pure-Python twin instead, and the benchmark measure that.
    package = tmp_path / "jouled" / "ingest"
    package.mkdir(parents=True)
    (tmp_path / "jouled" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "_otlpscan.cpython-399-x86_64-linux-gnu.so").write_bytes(b"not an ELF")
    (package / "_roots.cpython-399-x86_64-linux-gnu.so").write_bytes(b"not an ELF")
    with pytest.raises(RuntimeError, match="cannot load the compiled extensions") as err:
        interpreter(sys.executable, root=tmp_path)
    assert "jouled.ingest._otlpscan" in str(err.value)
    assert "jouled.ingest._roots" in str(err.value)
    assert "pip install -e ." in str(err.value)


def test_an_interpreter_that_does_not_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot run"):
        interpreter(str(tmp_path / "no-such-python"))
    broken = _wrapper(tmp_path, "echo 'no python here' >&2; exit 3")
    with pytest.raises(RuntimeError, match="no python here"):
        interpreter(broken)


def test_the_daemon_runs_on_the_interpreter_asked_for(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    wrapper = _wrapper(tmp_path, f'echo "$@" >> "{calls}"\nexec "{sys.executable}" "$@"')
    with daemon(tmp_path, {"interval": 1.0}, python=wrapper) as d:
        assert d.proc.poll() is None
        assert d.scrape().startswith(b"# ")
    assert calls.read_text().startswith("-m jouled run --config ")
    assert os.path.exists(tmp_path / "jouled.yaml")
