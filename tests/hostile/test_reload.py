"""Reload under hostile config files, and workload regexes from the config (issue 13)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jouled import config
from jouled.attribution.matchers import matchers_from
from jouled.config import ConfigError, read_config_text
from jouled.regex import compile_linear
from tests.hostile.conftest import RunningFactory


async def _reload(daemon, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(daemon.reload_async(), timeout_s)


async def test_a_fifo_in_place_of_the_config_is_refused_without_blocking(
    daemon_at: RunningFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue: a config path replaced by a FIFO hung the daemon so that only kill -9 stopped
    it (the read waited for a writer)."""
    async with daemon_at() as r:
        path = r.daemon.config_path
        assert path is not None
        before = r.daemon.config
        path.unlink()
        os.mkfifo(path)
        assert await _reload(r.daemon) is False
        assert r.daemon.config is before
        assert "not a regular file" in caplog.text
        async with aiohttp.ClientSession() as http:
            assert (await r.healthz(http))[0] == 200


async def test_a_fit_file_replaced_by_a_fifo_is_refused_on_reload_without_blocking(
    daemon_at: RunningFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload that names a new spans.fit_file reads it on the loop: a FIFO there froze the
    daemon (the read waited for a writer; only kill -9 stopped it)."""
    async with daemon_at() as r:
        path = r.daemon.config_path
        assert path is not None
        before = r.daemon.config
        fifo = path.parent / "fit.json"
        os.mkfifo(fifo)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw["spans"] = {"fit_file": str(fifo)}
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        assert await _reload(r.daemon) is False
        assert r.daemon.config is before
        assert "not a regular file" in caplog.text
        async with aiohttp.ClientSession() as http:
            assert (await r.healthz(http))[0] == 200


async def test_a_non_utf8_byte_keeps_the_old_config(
    daemon_at: RunningFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue: SIGHUP after one non-UTF-8 byte was appended: the daemon exited 1."""
    async with daemon_at() as r:
        path = r.daemon.config_path
        assert path is not None
        before = r.daemon.config
        with path.open("ab") as fh:
            fh.write(b"# caf\xe9\n")
        r.daemon.request_reload()  # as SIGHUP does
        for _ in range(100):
            if "reload rejected" in caplog.text:
                break
            await asyncio.sleep(0.02)
        assert r.daemon.config is before
        assert re.search(r"config\.yaml:\d+: not UTF-8 \(byte 0xe9 at offset \d+\)", caplog.text)
        async with aiohttp.ClientSession() as http:
            assert (await r.healthz(http))[0] == 200


async def test_a_10_mb_config_is_refused_by_size_and_never_holds_the_loop(
    daemon_at: RunningFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue: SIGHUP with a valid 10 MB config blocked scrapes ~8 s (parsed on the loop)."""
    async with daemon_at() as r:
        path = r.daemon.config_path
        assert path is not None
        text = path.read_text() + "".join(f"# {'x' * 98}\n" for _ in range(100_000))
        path.write_text(text)
        assert len(text) > 10_000_000
        lags_before = len(r.lags)
        assert await _reload(r.daemon) is False
        assert "a config file may hold at most 1048576 bytes" in caplog.text
        # A 0.9 MB config within the cap is parsed on a worker thread, then applied.
        path.write_text(text[:900_000].rsplit("\n", 1)[0] + "\n")
        assert await _reload(r.daemon) is True
        assert max(r.lags[lags_before:], default=0.0) < 0.5


async def test_a_sighup_storm_coalesces_and_health_stays_200(
    daemon_at: RunningFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with daemon_at() as r, aiohttp.ClientSession() as http:
        with caplog.at_level(logging.INFO, logger="jouled.daemon.service"):
            for _ in range(200):
                r.daemon.request_reload()
                await asyncio.sleep(0)
            await asyncio.sleep(1.0)
            reloads = caplog.text.count("configuration reloaded")
        assert 1 <= reloads <= 20  # coalesced: far fewer reloads than signals
        assert (await r.healthz(http))[0] == 200


def test_catastrophic_backtracking_patterns_match_in_linear_time() -> None:
    """Issue: cmdline "(a+)+$" was accepted and a process named "aaaa...ab" stalled the tick
    for seconds. Python's re would take minutes on 40 a's (past the test's timeout); RE2
    answers at once, and on 1 MB of them."""
    cfg = config.validate(
        {"workloads": [{"name": "w", "match": {"cmdline": "(a+)+$"}}], "ledger": {"path": None}},
        "test",
    )
    (matcher,) = matchers_from(cfg.workloads)
    assert matcher.cmdline is not None
    t0 = time.perf_counter()
    assert matcher.cmdline.search("a" * 40 + "b") is None
    assert matcher.cmdline.search("a" * 1_000_000 + "b") is None
    assert matcher.cmdline.search("x aaa") is not None
    assert time.perf_counter() - t0 < 30  # RE2: milliseconds; re: ~2^40 steps


@pytest.mark.parametrize(
    ("pattern", "why"),
    [(r"(a)\1", "invalid escape sequence"), (r"(?=serve)\w+", "invalid perl operator")],
)
def test_patterns_re2_cannot_run_are_rejected_at_load_with_the_reason(
    pattern: str, why: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config.validate({"workloads": [{"name": "w", "match": {"cmdline": pattern}}]}, "f.yaml")
    message = str(err.value)
    assert "workloads[0].match.cmdline" in message and why in message and "RE2" in message


def test_reading_a_config_file_has_a_size_cap_and_names_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"interval: 1.0\nlisten: \xff\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: not UTF-8 \(byte 0xff at offset 22\)"):
        read_config_text(path)
    path.write_bytes(b"#" * 2000)
    with pytest.raises(ConfigError, match="at most 1000 bytes"):
        read_config_text(path, max_bytes=1000)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_config_text(tmp_path)  # a directory
    assert compile_linear("uvicorn .*app:api").search("python -m uvicorn x.app:api")


yaml_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
keys = st.sampled_from(
    ["interval", "listen", "ingest", "connections", "workloads", "spans", "cost", "ledger",
     "collectors", "attribution", "log_level", "bogus"]
)  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.dictionaries(keys, yaml_values, max_size=5) | yaml_values,
    garbage=st.binary(max_size=40),
)
def test_the_config_loader_never_fails_but_with_a_config_error(
    tmp_path: Path, data: object, garbage: bytes
) -> None:
    """Any document, and any bytes after it: a Config, or one ConfigError line."""
    path = tmp_path / "fuzz.yaml"
    for content in (yaml.safe_dump(data).encode(), yaml.safe_dump(data).encode() + garbage):
        path.write_bytes(content)
        try:
            config.load(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path))  # names the file, then what to fix
