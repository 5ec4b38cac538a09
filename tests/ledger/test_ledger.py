"""The ledger: totals survive restarts, a full disk loses nothing, kill -9 leaves a
readable file, and SQLite never runs on the event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from jouled.ledger import Ledger, connect
from jouled.pipeline.cost import Books, CostDelta, Factors, RequestBooks
from jouled.report import totals

T0 = 1_700_000_080.0  # 40 s into a minute
F = Factors(1.5, 400.0, 0.0, 0.2, "USD")


def delta(
    wall: float, cpu_j: float = 100.0, workload_j: float = 40.0, requests: int = 0
) -> CostDelta:
    k = 1.5 / 3.6e6
    return CostDelta(
        wall_s=wall,
        seconds=1.0,
        factors=F,
        host=Books(
            {"cpu": cpu_j, "gpu": 2 * cpu_j}, 3 * cpu_j * k * 0.2, 0.001, 3 * cpu_j * k * 400
        ),
        workloads={
            "api": Books({"cpu": workload_j}, workload_j * k * 0.2, 0.0005, workload_j * k * 400)
        },
        requests=(
            {("api", "bert"): RequestBooks(requests, 10.0 * requests, 5.0, 1e-6, 2e-3)}
            if requests
            else {}
        ),
    )


def read(path: Path) -> dict:
    conn = connect(path, readonly=True)
    try:
        return totals(conn, None, float("inf"))
    finally:
        conn.close()


def test_rows_are_per_minute_and_sum_exactly(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    assert ledger.open()
    for i in range(30):  # 40 s .. 69 s: two minutes
        ledger.add(delta(T0 + i, requests=1 if i % 3 == 0 else 0))
    assert ledger.flush() > 0
    ledger.close()
    conn = sqlite3.connect(path)
    minutes = conn.execute("SELECT DISTINCT minute FROM minutes ORDER BY 1").fetchall()
    assert [m[0] for m in minutes] == [1_700_000_040, 1_700_000_100]
    scopes = {r[0] for r in conn.execute("SELECT scope FROM minutes")}
    assert scopes == {"host", "workload", "model"}
    pue, grid, price, cur = conn.execute(
        "SELECT pue, grid_g_per_kwh, price_per_kwh, currency FROM minutes LIMIT 1"
    ).fetchone()
    assert (pue, grid, price, cur) == (1.5, 400.0, 0.2, "USD")
    conn.close()
    doc = read(path)
    assert doc["host"]["energy_joules"] == pytest.approx(30 * 300.0)
    assert doc["host"]["energy_by_component_joules"] == {
        "cpu": pytest.approx(3000.0),
        "gpu": pytest.approx(6000.0),
    }
    assert doc["host"]["seconds"] == pytest.approx(30.0)
    api = doc["workloads"]["api"]
    assert api["energy_joules"] == pytest.approx(30 * 40.0)
    assert api["requests"] == 10 and api["joules_per_request"] == pytest.approx(10.0)
    assert api["emissions_grams"] == pytest.approx(30 * 40 * 1.5 / 3.6e6 * 400)


def test_restart_keeps_totals(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    for run in range(3):
        ledger = Ledger(path)
        assert ledger.open()
        for i in range(10):
            ledger.add(delta(T0 + i))  # the same minutes each run: upserts add up
        ledger.flush()
        ledger.close()
        assert read(path)["host"]["energy_joules"] == pytest.approx((run + 1) * 10 * 300.0)


def test_unwritable_path_disables_with_one_clear_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # a file where the directory should be: fails even as root
    ledger = Ledger(blocker / "ledger.db")
    with caplog.at_level(logging.WARNING, logger="jouled.ledger"):
        assert not ledger.open()
    assert "ledger.path" in caplog.text and "StateDirectory" in caplog.text
    assert len(caplog.records) == 1
    ledger.add(delta(T0))
    assert ledger.flush() == 0
    s = ledger.status()
    assert (s.enabled, s.up, s.pending_rows) == (True, False, 0)
    assert s.errors == {"open": 1}


def test_disabled_ledger(tmp_path: Path) -> None:
    ledger = Ledger(None)
    assert not ledger.open()
    ledger.add(delta(T0))
    assert ledger.flush() == 0
    assert not ledger.status().enabled


def test_a_full_disk_keeps_rows_in_memory_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    assert ledger.open()
    ledger.add(delta(T0))
    assert ledger.flush() > 0
    conn = ledger._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL on the next growth
    for i in range(2000):
        ledger.add(delta(T0 + 60 * (i + 1)))  # 2000 new minutes: the file must grow
    assert ledger.flush() == 0
    s = ledger.status()
    assert not s.up and s.errors == {"disk_full": 1} and s.pending_rows == 2000 * 2
    ledger.add(delta(T0 + 60 * 5000))
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert ledger.flush() == 2001 * 2
    assert ledger.status().up
    ledger.close()
    assert read(path)["host"]["energy_joules"] == pytest.approx(2002 * 300.0)


def test_retention_deletes_old_minutes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    now = T0 + 10 * 86400
    ledger = Ledger(path, retention_days=2, wall=lambda: now)
    assert ledger.open()
    ledger.add(delta(T0))  # 10 days old
    ledger.add(delta(now - 3600))
    ledger.flush()
    ledger.close()
    assert read(path)["host"]["energy_joules"] == pytest.approx(300.0)


async def test_flushes_run_off_the_event_loop(tmp_path: Path) -> None:
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    three = asyncio.Event()

    class Spy(Ledger):
        def flush(self) -> int:
            seen.append(threading.current_thread().name)
            if len(seen) >= 3:
                loop.call_soon_threadsafe(three.set)
            return super().flush()

    ledger = Spy(tmp_path / "l.db")
    assert await ledger.open_async()
    ledger.add(delta(T0))
    assert await ledger.flush_async() == 2
    task = asyncio.ensure_future(ledger.run(0.01))
    await asyncio.wait_for(three.wait(), 10)
    task.cancel()
    await ledger.close_async()
    assert seen and all(n.startswith("jouled-ledger") for n in seen)
    assert threading.current_thread().name not in seen


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from jouled.ledger import Ledger
    from tests.ledger.test_ledger import delta
    ledger = Ledger(Path(sys.argv[1]))
    assert ledger.open()
    n = 0
    while True:
        for i in range(50):  # each flush: 50 ticks across many minutes, one transaction
            ledger.add(delta(1_700_000_040.0 + 60 * ((n * 50 + i) % 5000)))
        ledger.flush()
        n += 1
        print(n, flush=True)
    """
)


def test_kill_9_mid_writes_leaves_a_readable_file_with_whole_flushes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert proc.stdout is not None
    acked = 0
    for line in proc.stdout:
        acked = int(line)
        if acked >= 40:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # Flushes the writer acknowledged before the kill landed, still in the pipe (a loaded
    # host lets it run ahead of this reader): each of them must be in the file too.
    for line in proc.stdout:
        acked = int(line)
    proc.stdout.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    energy = read(path)["host"]["energy_joules"]
    flushes = energy / (50 * 300.0)
    # Only whole transactions: every acknowledged flush, plus at most the one in flight.
    assert flushes == pytest.approx(round(flushes))
    assert acked <= round(flushes) <= acked + 1


def test_error_reasons_come_from_sqlites_result_codes(tmp_path: Path) -> None:
    import sqlite3

    from jouled.ledger import _reason

    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as readonly:
        ro.execute("INSERT INTO t VALUES (1)")
    ro.close()
    assert readonly.value.sqlite_errorname.startswith("SQLITE_READONLY")
    assert _reason(readonly.value) == "readonly"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(sqlite3.DatabaseError) as notadb:
        sqlite3.connect(garbage).execute("SELECT * FROM sqlite_master")
    assert _reason(notadb.value) == "corrupt"
    # Text that merely mentions "full" is no longer taken for a full disk.
    assert _reason(sqlite3.OperationalError("table full_names has no column x")) == "io"


def test_the_writers_page_cache_stays_within_its_bound_however_much_it_reads(
    tmp_path: Path,
) -> None:
    """A long-lived daemon's writer reads pages as it prunes and appends; its page cache is
    bounded at WRITER_CACHE_KIB where SQLite's default would hold ~2 MiB. Measured with
    SQLite's own count of the memory it holds (the library the sqlite3 module uses)."""
    import ctypes

    from jouled.ledger import WRITER_CACHE_KIB

    lib = ctypes.CDLL("libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE filler (x BLOB)")
        setup.executemany("INSERT INTO filler VALUES (randomblob(2000))", [()] * 4000)  # ~8 MB
    setup.close()

    def held_after_a_full_read(conn: sqlite3.Connection) -> int:
        before = lib.sqlite3_memory_used()
        assert conn.execute("SELECT sum(length(x)) FROM filler").fetchone()[0] == 8_000_000
        return int(lib.sqlite3_memory_used() - before)

    writer = connect(path)
    ours = held_after_a_full_read(writer)
    plain = sqlite3.connect(path)
    default = held_after_a_full_read(plain)
    writer.close()
    plain.close()
    if default == 0:  # a Python whose sqlite3 module has SQLite built in: not this library
        pytest.skip("the sqlite3 module does not use the shared libsqlite3.so.0")
    assert ours < (WRITER_CACHE_KIB + 128) * 1024 < 1.5 * 2**20 < default
