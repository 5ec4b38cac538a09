"""The ledger: durable per-minute books of energy, requests, money and emissions.

One row per UTC minute and *party*: ``host`` (all IT energy), each ``workload``, and each
``model`` of a workload (its settled requests: count, energy, GFLOPs). Rows are summed tick
by tick with the factors in force (PUE, grid intensity, price), which the row also keeps as
they stood at the minute's last tick. SQLite in WAL mode; each flush is one transaction, so
``kill -9`` loses at most the deltas since the last flush and never leaves a torn file. All
SQLite work runs on one dedicated thread, never on the event loop.

Over 400 lines because it holds the write path (pending rows, the flush thread, retention,
error reasons) over one SQLite connection; the schema and its migrations are in
ledger_schema.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from jouled.ledger_schema import (
    ENERGY_SOURCE,
    MERGE_SOURCE,
    SCHEMA_VERSION,
    V2_FACTORS,
    V2_SUMMED,
    LedgerSchemaError,
    energy_source,
    migrate,
)
from jouled.pipeline.cost import Books, CostDelta, Factors, LedgerStatus
from jouled.threads import named_pool

log = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "Ledger", "connect", "reading"]
COMPONENTS: Final = ("cpu", "dram", "gpu", "other")
SCOPE_HOST: Final = "host"
SCOPE_WORKLOAD: Final = "workload"
SCOPE_MODEL: Final = "model"
# Rows kept in memory while the file cannot be written (disk full); older ones are dropped.
MAX_PENDING_ROWS: Final = 200_000
PRUNE_EVERY_S: Final = 3600.0

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS minutes (
    minute INTEGER NOT NULL,           -- unix seconds at the start of the UTC minute
    scope TEXT NOT NULL,               -- host | workload | model
    workload TEXT NOT NULL,            -- '' for the host
    model TEXT NOT NULL,               -- '' unless scope = 'model'
    seconds REAL NOT NULL DEFAULT 0,   -- time covered (host rows)
    energy_cpu_j REAL NOT NULL DEFAULT 0,
    energy_dram_j REAL NOT NULL DEFAULT 0,
    energy_gpu_j REAL NOT NULL DEFAULT 0,
    energy_other_j REAL NOT NULL DEFAULT 0,
    energy_j REAL NOT NULL DEFAULT 0,  -- IT energy, all components (model: request energy)
    requests INTEGER NOT NULL DEFAULT 0,
    gflops REAL NOT NULL DEFAULT 0,
    cost_energy REAL NOT NULL DEFAULT 0,     -- facility energy (x PUE) x price
    cost_hardware REAL NOT NULL DEFAULT 0,
    emissions_g REAL NOT NULL DEFAULT 0,     -- gCO2e, PUE included
    pue REAL NOT NULL,
    grid_g_per_kwh REAL NOT NULL,
    price_per_kwh REAL NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (minute, scope, workload, model)
) WITHOUT ROWID;
"""

_SUMMED: Final = (
    "seconds",
    *(f"energy_{c}_j" for c in COMPONENTS),
    "energy_j",
    "requests",
    "gflops",
    "cost_energy",
    "cost_hardware",
    "emissions_g",
    *V2_SUMMED,  # schema version 2 (jouled/ledger_schema.py): NULL in older rows
)
_FACTORS: Final = ("pue", "grid_g_per_kwh", "price_per_kwh", "currency", *V2_FACTORS)
_COLUMNS: Final = ("minute", "scope", "workload", "model", *_SUMMED, *_FACTORS, ENERGY_SOURCE)
UPSERT: Final = (
    f"INSERT INTO minutes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (minute, scope, workload, model) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE({c}, 0) + excluded.{c}" for c in _SUMMED)
    + ", "
    + ", ".join(f"{c} = excluded.{c}" for c in _FACTORS)
    + ", "
    + MERGE_SOURCE
)

RowKey = tuple[int, str, str, str]  # (minute, scope, workload, model)


@dataclass(slots=True)
class _Row:
    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMMED, 0.0))
    factors: Factors | None = None

    scope: str = SCOPE_HOST

    def merge(self, other: _Row) -> None:
        for k, v in other.values.items():
            self.values[k] += v
        self.factors = other.factors or self.factors

    def source(self) -> str | None:
        """measured | estimate | mixed for host and workload rows (None for models)."""
        if self.scope == SCOPE_MODEL:
            return None
        return energy_source(self.values["energy_j"], self.values["energy_estimated_j"])


# SQLite's primary result codes (sqlite3.Error.sqlite_errorname, Python 3.11+) -> reason.
_REASONS: Final = {
    "SQLITE_FULL": "disk_full",
    "SQLITE_READONLY": "readonly",
    "SQLITE_PERM": "readonly",
    "SQLITE_AUTH": "readonly",
    "SQLITE_CANTOPEN": "readonly",
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "corrupt",
}


def _reason(exc: BaseException) -> str:
    """The ``jouled_ledger_errors_total`` reason of a SQLite error, from its result code
    (``SQLITE_FULL``, ``SQLITE_READONLY_DBMOVED``, ...: the extended codes map with their
    primary one); ``io`` for any other code or an error without one."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    primary = "_".join(name.split("_")[:2])
    return _REASONS.get(primary, "io")


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _copy_rows(old: sqlite3.Connection, new: sqlite3.Connection) -> int:
    """Every row of ``old``'s minutes into ``new`` (rows it has already are kept)."""
    columns = [r[1] for r in old.execute("PRAGMA table_info(minutes)")]
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    rows = old.execute(f"SELECT {names} FROM minutes").fetchall()
    with new:
        new.executemany(f"INSERT OR IGNORE INTO minutes ({names}) VALUES ({marks})", rows)
    return len(rows)


# The daemon's writer connection's page cache, KiB (SQLite's default is 2,000).
WRITER_CACHE_KIB = 512


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the ledger's pragmas (WAL, NORMAL sync: crash-safe, not fsync-bound)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # The writer appends a minute's rows at the B-trees' right edges and prunes from
        # their left: a few pages each time. SQLite's default page cache (2 MiB a connection)
        # fills with the pages a long-lived daemon has ever read; 512 KiB bounds it lower.
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        conn.executescript(SCHEMA)
        try:
            old = migrate(conn)
        except Exception:
            conn.close()
            raise
        if 0 < old < SCHEMA_VERSION:
            log.info("ledger %s migrated from schema %d to %d", path, old, SCHEMA_VERSION)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Ledger:
    """Accumulates cost deltas in memory (event loop) and writes them in transactions
    (its own thread). A path that cannot be opened disables it with one warning."""

    def __init__(
        self,
        path: Path | None,
        *,
        retention_days: float = 0.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._retention_s = retention_days * 86400.0
        self._wall = wall
        self._lock = threading.Lock()
        self._pending: dict[RowKey, _Row] = {}
        self._conn: sqlite3.Connection | None = None
        self._up = False
        self._rows_written = 0
        self._flushes = 0
        self._errors: dict[str, int] = {}
        self._last_prune = float("-inf")
        self._last_error: str | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file

    # --- lifecycle ---
    def open(self) -> bool:
        """Open (create) the file; False, with a warning naming the fix, when it cannot."""
        if self.path is None:
            log.info("ledger disabled (ledger.path is empty)")
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(self.path)
        except LedgerSchemaError as exc:
            self._count("schema")
            log.warning("ledger disabled: %s: %s. Live metrics go on.", self.path, exc)
            self._conn = None
            return False
        except (OSError, sqlite3.Error) as exc:
            self._count(_reason(exc) if isinstance(exc, sqlite3.Error) else "open")
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning(
                "ledger disabled: cannot open %s: %s. Set ledger.path to a writable file "
                "(e.g. ~/.local/state/jouled/ledger.db, the default when not root), or run "
                "under systemd with StateDirectory=jouled; ledger.path: '' turns the ledger "
                "off. Live metrics go on; jouled_ledger_up is 0.",
                self.path,
                detail,
            )
            self._conn = None
            return False
        self._up = True
        self._identity = _identity(self.path)
        log.info("ledger in use: %s", self.path)
        return True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
            self._up = False

    # --- writing (called on the event loop: memory only) ---
    def add(self, delta: CostDelta) -> None:
        """Merge one tick's books (the cost stage's sink) into the pending per-minute rows:
        host, each workload, each (workload, model)'s settled requests. Called on the tick
        loop; no I/O (``run`` flushes). Above ``MAX_PENDING_ROWS`` the oldest rows are
        dropped and counted (``errors["dropped"]``). A no-op while no file is open."""
        if self._conn is None:
            return  # disabled or unopenable: nothing would ever write these rows
        minute = int(delta.wall_s // 60) * 60
        rows: list[tuple[RowKey, _Row]] = [
            ((minute, SCOPE_HOST, "", ""), _books_row(delta.host, delta.seconds, delta.factors))
        ]
        for workload, books in delta.workloads.items():
            rows.append(
                ((minute, SCOPE_WORKLOAD, workload, ""), _books_row(books, 0.0, delta.factors))
            )
        with self._lock:
            pending = self._pending
            for key, row in rows:
                mine = pending.get(key)
                if mine is None:
                    pending[key] = row
                else:
                    mine.merge(row)
            for (workload, model), req in delta.requests.items():
                # A model's row of this minute, its requests' books added in place (50 models
                # a tick: no row made and merged for each).
                key = (minute, SCOPE_MODEL, workload, model)
                mine = pending.get(key)
                if mine is None:
                    mine = pending[key] = _Row(scope=SCOPE_MODEL)
                mine.factors = delta.factors
                v = mine.values
                v["energy_j"] += req.energy_j
                v["requests"] += req.count
                v["gflops"] += req.gflops
                v["cost_energy"] += req.cost_energy
                v["emissions_g"] += req.emissions_g
                v["emissions_market_g"] += req.emissions_market_g
                v["water_on_site_l"] += req.water_on_site_l
                v["water_off_site_l"] += req.water_off_site_l
            self._trim()

    def _trim(self) -> None:
        excess = len(self._pending) - MAX_PENDING_ROWS
        if excess > 0:
            for key in sorted(self._pending)[:excess]:
                del self._pending[key]
            self._count("dropped", excess)

    def _count(self, reason: str, n: int = 1) -> None:
        self._errors[reason] = self._errors.get(reason, 0) + n

    # --- flushing (its own thread) ---
    def flush(self) -> int:
        """Write pending rows in one transaction; returns rows written (0 on failure)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            conn = self._conn
        if conn is None or not pending:
            return 0
        conn = self._follow_file(conn)
        if conn is None:
            self._put_back(pending)
            return 0
        params = [
            (
                *key,
                *(row.values[c] for c in _SUMMED),
                *_factor_values(row.factors),
                row.source(),
            )
            for key, row in sorted(pending.items())
        ]
        try:
            with conn:
                conn.executemany(UPSERT, params)
            self._prune(conn)
        except sqlite3.Error as exc:
            reason = _reason(exc)
            with self._lock:
                self._count(reason)
                self._up = False
            self._put_back(pending)
            if reason != self._last_error:
                log.warning(
                    "ledger write to %s failed (%s: %s); %d rows kept in memory for the next try",
                    self.path,
                    reason,
                    exc,
                    len(pending),
                )
            self._last_error = reason
            return 0
        with self._lock:
            if not self._up and self._last_error is not None:
                log.info("ledger writes to %s work again", self.path)
            self._up = True
            self._last_error = None
            self._rows_written += len(params)
            self._flushes += 1
        return len(params)

    def _put_back(self, pending: dict[RowKey, _Row]) -> None:
        """Rows that could not be written go back (merged with what arrived meanwhile)."""
        with self._lock:
            for key, row in pending.items():
                newer = self._pending.get(key)
                if newer is not None:
                    row.merge(newer)
                self._pending[key] = row
            self._trim()

    def _follow_file(self, conn: sqlite3.Connection) -> sqlite3.Connection | None:
        """The connection to write through: ``conn`` while its file is still the one at
        ``path``. A ledger deleted (or replaced) while running would swallow every row into
        an unlinked inode; instead the file is recreated at ``path`` and the rows the old
        one holds are copied over (still readable through the open connection), with a
        warning and ``jouled_ledger_errors_total{reason="deleted"}``. None (rows kept in
        memory, ``jouled_ledger_up`` 0) when it cannot be recreated yet."""
        assert self.path is not None
        now = _identity(self.path)
        if now is not None and now == self._identity:
            return conn
        with self._lock:
            first = self._last_error != "deleted"
            self._count("deleted")
            self._up = False
        if first:
            log.warning(
                "ledger file %s was deleted or replaced while jouled runs; recreating it and "
                "copying the rows written so far",
                self.path,
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = connect(self.path)
            copied = _copy_rows(conn, fresh)
        except (OSError, sqlite3.Error, LedgerSchemaError) as exc:
            self._last_error = "deleted"
            if first:
                log.warning("cannot recreate ledger %s: %s; rows kept in memory", self.path, exc)
            return None
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        with self._lock:
            self._conn = fresh
            self._identity = _identity(self.path)
        log.info("ledger %s recreated with %d earlier rows", self.path, copied)
        self._last_error = "deleted"  # the next good flush logs that writes work again
        return fresh

    def _prune(self, conn: sqlite3.Connection) -> None:
        now = self._wall()
        if self._retention_s <= 0 or now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        with conn:
            conn.execute("DELETE FROM minutes WHERE minute < ?", (int(now - self._retention_s),))

    def status(self) -> LedgerStatus:
        with self._lock:
            return LedgerStatus(
                enabled=self.path is not None,
                up=self._up,
                path=str(self.path or ""),
                rows_written=self._rows_written,
                flushes=self._flushes,
                pending_rows=len(self._pending),
                errors=MappingProxyType(dict(self._errors)),
            )

    # --- async wrappers for the daemon: SQLite never runs on the event loop ---
    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = named_pool(1, "jouled-ledger")
        return self._executor

    async def _run(self, fn: Callable[[], object]) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn)

    async def open_async(self) -> bool:
        return bool(await self._run(self.open))

    async def flush_async(self) -> int:
        written = await self._run(self.flush)
        assert isinstance(written, int)
        return written

    async def close_async(self) -> None:
        await self._run(self.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def run(self, interval_s: float) -> None:
        """Flush every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.flush_async()


def _factor_values(f: Factors | None) -> tuple[float | str | None, ...]:
    if f is None:
        return (0.0, 0.0, 0.0, "", *(None,) * len(V2_FACTORS))
    return (
        f.pue,
        f.grid_g_per_kwh,
        f.price_per_kwh,
        f.currency,
        f.provider,
        f.zone,
        f.factor_type,
        f.boundary,
        f.grid_age_s,
        f.market_g_per_kwh,  # NaN is stored as NULL
        f.market_basis,
    )


def _books_row(books: Books, seconds: float, factors: Factors) -> _Row:
    row = _Row(factors=factors)
    total = 0.0
    for component, j in books.energy_j.items():
        column = f"energy_{component}_j" if component in COMPONENTS else "energy_other_j"
        row.values[column] += j
        total += j
    row.values.update(
        seconds=seconds,
        energy_j=total,
        cost_energy=books.cost_energy,
        cost_hardware=books.cost_hardware,
        emissions_g=books.emissions_g,
        emissions_market_g=books.emissions_market_g,
        embodied_g=books.embodied_g,
        water_on_site_l=books.water_on_site_l,
        water_off_site_l=books.water_off_site_l,
        energy_estimated_j=books.estimated_j,
    )
    return row


@contextlib.contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection for reports; the daemon may be writing meanwhile."""
    conn = connect(path, readonly=True)
    try:
        yield conn
    finally:
        conn.close()
