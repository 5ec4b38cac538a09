"""RAPL energy through the Linux powercap sysfs tree (``/sys/class/powercap``).

A *zone* is one RAPL meter: ``intel-rapl:N`` is socket N's *package* (cores + uncore),
``intel-rapl:N:M`` a subzone inside it (core, uncore, or dram, which sysfs nests under the
package although its energy is not part of the package's). ``psys`` is the whole platform.
Each zone's ``energy_uj`` wraps at ``max_energy_range_uj``; this collector unfolds it into
cumulative joules per *domain* (``package-0``, ``core-0``, ``dram-0``, ``psys``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from jouled.clock import Clock, SystemClock
from jouled.collectors.base import (
    CheckRow,
    CollectorError,
    DomainReading,
    HardwareAbsent,
    Kind,
    Sample,
    Source,
)
from jouled.collectors.counter import CounterTrack, Event, FrozenWatch

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/class/powercap")
_MSR_PREFIX = "intel-rapl:"
_MMIO_PREFIX = "intel-rapl-mmio:"
# Slack on top of max power x elapsed time: covers scheduling jitter between reading the
# clock and the file when ticks are very short.
_MAX_DELTA_MARGIN = 1.5
_MAX_DELTA_FLOOR_UJ = 1_000_000
_REDISCOVER_EVERY = 60
# Zones of one socket and kind whose raw counters agree within this many µJ, moving, this
# many reads in a row, are one meter exposed twice (AMD multi-die parts expose
# package-0-die-N with one counter). Sockets are never compared: each has its own meter.
_MIRROR_TOLERANCE_UJ = 100_000
_MIRROR_CONFIRM_READS = 3
# Only these kinds feed host components, so only they are judged frozen: a client part's
# uncore (integrated GPU) legitimately sits at 0 while power-gated.
_FROZEN_KINDS = frozenset({Kind.PACKAGE, Kind.DRAM, Kind.PSYS})

PERMISSION_FIX = (
    "energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694). Run jouled as "
    "root (the systemd unit does), or let a group read it: a udev rule "
    '\'SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chgrp jouled /sys%p/energy_uj", '
    'RUN+="/bin/chmod g+r /sys%p/energy_uj"\' in /etc/udev/rules.d/90-jouled-rapl.rules, '
    "or a systemd-tmpfiles line 'z /sys/class/powercap/intel-rapl*/energy_uj 0440 root "
    "jouled -' in /etc/tmpfiles.d/jouled-rapl.conf, with jouled running in group jouled"
)
FROZEN_FIX = (
    "this counter does not advance (hypervisors often expose RAPL files they never update): "
    "leave collectors.estimate.enabled at auto so the estimate covers it, or set "
    "collectors.rapl.enabled: false on this host"
)
ABSENT_FIX = (
    "on bare metal, load the powercap RAPL driver: modprobe intel_rapl_msr (Intel, and AMD "
    "Zen on Linux 5.8+); a VM has none to load (jouled estimates instead, source=estimate); "
    "collectors.rapl.enabled: false stops looking"
)


def _kernel_range_uj(esu: int) -> int:
    """``max_energy_range_uj`` as the kernel computes it for energy-status-unit ``esu``: the
    32-bit counter mask times the unit, the unit kept in whole nJ (intel_rapl_common.c)."""
    unit_nj = 1_000_000_000 // (1 << esu)
    return 0xFFFFFFFF * unit_nj // 1000


# Candidate ranges where max_energy_range_uj reads 0: the energy status MSR is 32 bits wide,
# its unit 1/2^ESU J with ESU a 5-bit field (14 on Intel packages, 61 µJ; 16 on AMD and on
# Intel server DRAM, 15.3 µJ). Tiny ranges are pruned once the counter is seen above them.
ASSUMED_RANGES_UJ: tuple[int, ...] = tuple(sorted({_kernel_range_uj(esu) for esu in range(32)}))

_PACKAGE_RE = re.compile(r"package-(\d+)(?:-die-(\d+))?")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_SUBZONE_KINDS = {"core": Kind.CORE, "uncore": Kind.UNCORE, "dram": Kind.DRAM}


def read_sysfs_text(path: Path) -> str:
    """The default reader: one ``read()`` of the file, as sysfs attributes expect."""
    return path.read_text(encoding="ascii")


@dataclass(frozen=True, slots=True)
class _Zone:
    """One discovered zone and the domain it feeds."""

    zone_id: str  # the kernel's name, e.g. intel-rapl:0:1
    path: Path  # root / zone_id (the class symlink)
    ids: tuple[int, ...]
    mmio: bool
    raw_name: str  # the zone's ``name`` file
    base: str  # the domain name before de-duplication
    kind: Kind
    device: str  # socket index, "" for platform-wide zones
    max_range_uj: int | None
    error: str | None  # why the zone cannot be used (max range unreadable), or None
    range_assumed: bool = False  # max_energy_range_uj read 0: wraps unfold on candidates

    @property
    def energy_path(self) -> Path:
        return self.path / "energy_uj"


@dataclass(slots=True)
class _Scan:
    zones: list[_Zone]  # MSR zones, then MMIO zones that no MSR zone duplicates
    duplicates: list[tuple[_Zone, _Zone]]  # (mmio zone, the MSR zone it duplicates)
    problems: dict[str, str]  # zone id -> why it was skipped
    any_entry: bool  # the tree has RAPL entries at all


@dataclass(slots=True)
class _DomainState:
    kind: Kind
    device: str
    zone: _Zone | None  # None while the zone has vanished
    last_zone_id: str
    track: CounterTrack
    cumulative_uj: int = 0
    ever_read: bool = False
    problem: str | None = None
    frozen: FrozenWatch = field(default_factory=FrozenWatch)
    # Mirror detection: the domain this one agrees with, for how many reads, and the energy
    # held back meanwhile (released if they part, dropped once the mirror is confirmed).
    mirror_candidate: str | None = None
    mirror_reads: int = 0
    held_uj: int = 0
    mirror_of: str | None = None
    raw: int | None = None  # this read's raw value, for mirror detection
    moved: bool = False
    last_delta: int = 0


def parse_zone_name(entry: str) -> tuple[bool, tuple[int, ...]] | None:
    """``intel-rapl:0:a`` → ``(False, (0, 10))``; ``intel-rapl-mmio:0`` → ``(True, (0,))``.

    Ids are hex, as the kernel prints them (``%x``). Anything else (the control-type
    directories ``intel-rapl``, other drivers) gives ``None``.
    """
    if entry.startswith(_MMIO_PREFIX):
        mmio, suffix = True, entry[len(_MMIO_PREFIX) :]
    elif entry.startswith(_MSR_PREFIX):
        mmio, suffix = False, entry[len(_MSR_PREFIX) :]
    else:
        return None
    parts = suffix.split(":")
    if not all(_HEX_RE.fullmatch(p) for p in parts):
        return None
    return mmio, tuple(int(p, 16) for p in parts)


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-") or "zone"


def _describe_oserror(exc: OSError, path: Path) -> str:
    code = errno.errorcode.get(exc.errno or 0, "error")
    return f"cannot read {path}: {exc.strerror or exc} ({code})"


def _classify(
    raw_name: str, ids: tuple[int, ...], parent_name: str | None
) -> tuple[str, Kind, str]:
    """(domain base name, kind, device) of a zone from its name and its parent's."""
    if len(ids) == 1:
        m = _PACKAGE_RE.fullmatch(raw_name)
        if m:
            return raw_name, Kind.PACKAGE, m.group(1)
        if raw_name == "psys":
            return "psys", Kind.PSYS, ""
        if raw_name == "dram":
            # Top-level dram (no package parent): its index is the best socket guess.
            return f"dram-{ids[0]}", Kind.DRAM, str(ids[0])
        return _sanitize(raw_name), Kind.OTHER, ""
    # A subzone: its socket (and die) comes from the parent package's name, not from the
    # zone index, which psys or missing sockets can shift.
    suffix, device = str(ids[0]), str(ids[0])
    if parent_name is not None and (m := _PACKAGE_RE.fullmatch(parent_name)):
        suffix, device = parent_name.removeprefix("package-"), m.group(1)
    kind = _SUBZONE_KINDS.get(raw_name)
    if kind is not None:
        return f"{raw_name}-{suffix}", kind, device
    return f"{_sanitize(raw_name)}-{suffix}", Kind.OTHER, device


def _scan(root: Path, read_text: Callable[[Path], str]) -> _Scan:
    """List the zones under ``root`` and read what never changes (name, range)."""
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return _Scan([], [], {}, any_entry=False)
    parsed: dict[tuple[bool, tuple[int, ...]], str] = {}
    for entry in entries:
        key = parse_zone_name(entry)
        if key is not None:
            parsed[key] = entry
    problems: dict[str, str] = {}
    names: dict[tuple[bool, tuple[int, ...]], str] = {}
    for key, entry in parsed.items():
        path = root / entry / "name"
        try:
            names[key] = read_text(path).strip()
        except OSError as exc:
            problems[entry] = _describe_oserror(exc, path)
    found: list[_Zone] = []
    for key in sorted(names):
        mmio, ids = key
        entry = parsed[key]
        base, kind, device = _classify(names[key], ids, names.get((mmio, ids[:-1])))
        range_path = root / entry / "max_energy_range_uj"
        max_range: int | None = None
        error: str | None = None
        assumed = False
        try:
            text = read_text(range_path).strip()
            if not (text.isascii() and text.isdigit()):
                error = f"unusable {range_path}: {text[:40]!r}"
            elif int(text) == 0:
                assumed = True  # reported on some kernels: the counter still works
            else:
                max_range = int(text)
        except OSError as exc:
            error = _describe_oserror(exc, range_path)
        found.append(
            _Zone(
                entry,
                root / entry,
                ids,
                mmio,
                names[key],
                base,
                kind,
                device,
                max_range,
                error,
                assumed,
            )
        )
    # intel-rapl-mmio duplicates an MSR package domain on recent client CPUs: counting both
    # would double the package. Prefer MSR; fall back to MMIO only where MSR is missing.
    msr_by_base = {z.base: z for z in found if not z.mmio}
    zones = [z for z in found if not z.mmio]
    duplicates: list[tuple[_Zone, _Zone]] = []
    for z in found:
        if z.mmio:
            if z.base in msr_by_base:
                duplicates.append((z, msr_by_base[z.base]))
            else:
                zones.append(z)
    return _Scan(zones, duplicates, problems, any_entry=bool(parsed))


class RaplCollector:
    """Cumulative energy of every RAPL zone, wraparound and resets unfolded.

    ``root`` is the powercap class directory; ``clock`` gives the monotonic time that
    bounds a plausible delta (``max_power_w`` per zone); ``read_text`` reads one sysfs file
    (inject a fake's to emulate EACCES or EIO even as root); ``host_busy_s`` returns the
    host's cumulative busy CPU seconds (/proc/stat), so a counter that does not move while
    the host works is marked frozen (``None``: never judged frozen). Raises
    ``HardwareAbsent`` when ``root`` holds no RAPL zone.

    Counter faults it handles (docs/MEASUREMENT.md has the table): wraps (at the published
    range, or at an assumed 32-bit range where ``max_energy_range_uj`` reads 0), resets
    confirmed by the read after them, single absurd reads dropped (``glitches``), zones that
    mirror another zone's counter (counted once), counters frozen while the host is busy.
    """

    name = "rapl"

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        clock: Clock | None = None,
        max_power_w: float = 2000.0,
        read_text: Callable[[Path], str] | None = None,
        rediscover_every: int = _REDISCOVER_EVERY,
        *,
        host_busy_s: Callable[[], float] | None = None,
    ) -> None:
        if max_power_w <= 0:
            raise ValueError("max_power_w must be positive")
        self.root = Path(root)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_power_w = max_power_w
        self._read_text = read_text if read_text is not None else read_sysfs_text
        self._rediscover_every = max(1, rediscover_every)
        self._host_busy_s = host_busy_s
        self._reads = 0
        self._stale = False
        # zone id -> domain, so a name given once (psys-1) never moves to another zone.
        self._assigned: dict[str, str] = {}
        self._domains: dict[str, _DomainState] = {}
        self._scan_problems: dict[str, str] = {}
        scan = _scan(self.root, self._read_text)
        if not scan.any_entry:
            raise HardwareAbsent(
                f"no RAPL powercap zones under {self.root}: this host (a VM?) exposes no "
                "RAPL; jouled will estimate",
                fix=ABSENT_FIX,
            )
        self._apply(scan)

    # -- discovery -----------------------------------------------------------------------
    @property
    def domains(self) -> dict[str, str]:
        """Domain -> the zone id feeding it now (``""`` while its zone has vanished)."""
        return {
            d: (st.zone.zone_id if st.zone is not None else "")
            for d, st in sorted(self._domains.items())
        }

    def _apply(self, scan: _Scan) -> None:
        """Bind scanned zones to domains; a domain whose zone changed starts a new baseline."""
        self._scan_problems = scan.problems
        used = {self._assigned[z.zone_id] for z in scan.zones if z.zone_id in self._assigned}
        fresh = [z for z in scan.zones if z.zone_id not in self._assigned]
        claims = Counter(z.base for z in fresh)
        for z in fresh:
            name = z.base
            if claims[name] > 1 or name in used:
                k = 0
                while f"{z.base}-{k}" in used:
                    k += 1
                name = f"{z.base}-{k}"
            used.add(name)
            self._assigned[z.zone_id] = name
        present: set[str] = set()
        for z in scan.zones:
            domain = self._assigned[z.zone_id]
            present.add(domain)
            st = self._domains.get(domain)
            if st is None:
                track = CounterTrack(self._ranges_for(z, scan.zones), self._max_delta_uj)
                self._domains[domain] = _DomainState(z.kind, z.device, z, z.zone_id, track)
                continue
            if st.zone is None or st.zone.zone_id != z.zone_id:
                if st.zone is None:
                    logger.info("RAPL zone %s (%s) is back", z.zone_id, domain)
                st.track.rebase()  # another counter (or a reloaded one): new baseline
            st.zone, st.last_zone_id = z, z.zone_id
        for domain, st in self._domains.items():
            if domain not in present and st.zone is not None:
                self._vanish(domain, st)
        self._stale = any(st.zone is None for st in self._domains.values()) or any(
            z.error is not None for z in scan.zones
        )

    def _ranges_for(self, z: _Zone, zones: list[_Zone]) -> int | tuple[int, ...]:
        if z.max_range_uj is not None:
            return z.max_range_uj
        # Unpublished: a sibling's published range (same energy unit, mostly) or any
        # 32-bit x energy-unit range; the smallest that makes a wrap plausible wins.
        siblings = {s.max_range_uj for s in zones if s.max_range_uj is not None}
        candidates = tuple(sorted(siblings | set(ASSUMED_RANGES_UJ)))
        logger.warning(
            "RAPL zone %s (%s): max_energy_range_uj reads 0; reading it anyway and unfolding "
            "wraps as a 32-bit energy-status counter (range 2^32 energy units; %s J on "
            "Intel packages, %s J at AMD's unit%s); the range is fixed at the first wrap",
            z.zone_id,
            z.base,
            _kernel_range_uj(14) // 1_000_000,
            _kernel_range_uj(16) // 1_000_000,
            f", or a sibling zone's {sorted(siblings)} uJ" if siblings else "",
        )
        return candidates

    def _vanish(self, domain: str, st: _DomainState) -> None:
        logger.warning(
            "RAPL zone %s (%s) vanished; holding its energy at %.6f J",
            st.last_zone_id,
            domain,
            st.cumulative_uj / 1e6,
        )
        st.zone = None
        st.track.rebase()
        self._stale = True

    def _rediscover(self) -> None:
        self._apply(_scan(self.root, self._read_text))

    # -- reading -------------------------------------------------------------------------
    def _max_delta_uj(self, elapsed_s: float) -> int:
        plausible = self._max_power_w * max(elapsed_s, 0.0) * 1e6 * _MAX_DELTA_MARGIN
        return int(plausible) + _MAX_DELTA_FLOOR_UJ

    def _note_problem(self, domain: str, st: _DomainState, problem: str | None) -> None:
        # Log a problem when it starts or changes, not on every tick it persists.
        if problem != st.problem:
            if problem is not None:
                logger.warning("RAPL %s: %s", domain, problem)
            else:
                logger.info("RAPL %s readable again", domain)
        st.problem = problem

    def read(self) -> Sample:
        self._reads += 1
        if self._stale or self._reads % self._rediscover_every == 0:
            self._rediscover()
        now = self._clock.monotonic()
        busy = self._host_busy()
        for st in self._domains.values():
            st.raw, st.moved = None, False
        problems = dict(self._scan_problems)
        denied: list[Path] = []
        attempted = succeeded = 0
        for domain, st in sorted(self._domains.items()):
            zone = st.zone
            if zone is None:
                problems[domain] = (
                    f"zone {st.last_zone_id} vanished; holding {st.cumulative_uj / 1e6:.6f} J"
                )
                continue
            attempted += 1
            if zone.error is not None:
                problems[domain] = zone.error
                self._note_problem(domain, st, zone.error)
                continue
            raw, problem = self._read_energy(zone)
            if raw is None:
                assert problem is not None
                if problem == "vanished":
                    self._vanish(domain, st)
                    problems[domain] = (
                        f"zone {zone.zone_id} vanished; holding {st.cumulative_uj / 1e6:.6f} J"
                    )
                    st.problem = None
                    continue
                if problem.startswith("permission denied"):
                    denied.append(zone.energy_path)
                problems[domain] = problem
                self._note_problem(domain, st, problem)
                continue
            succeeded += 1
            self._note_problem(domain, st, None)
            self._advance(domain, st, zone, raw, now)
            self._watch_frozen(domain, st, zone, now, busy)
        if attempted and not succeeded:
            if len(denied) == attempted:
                more = f" (and {len(denied) - 1} other zones)" if len(denied) > 1 else ""
                raise CollectorError(
                    f"permission denied reading {denied[0]}{more}", fix=PERMISSION_FIX
                )
            raise CollectorError(
                "no RAPL zone could be read: "
                + "; ".join(f"{d}: {p}" for d, p in sorted(problems.items()))
            )
        if not attempted:
            raise CollectorError(
                f"every RAPL zone under {self.root} vanished (driver unloaded?)",
                fix="reload the intel_rapl_msr module (modprobe intel_rapl_msr)",
            )
        self._match_mirrors()
        counted = [
            (d, st)
            for d, st in sorted(self._domains.items())
            if st.ever_read and st.mirror_of is None
        ]
        readings = tuple(
            DomainReading(
                domain,
                st.kind,
                Source.RAPL,
                st.cumulative_uj / 1e6,
                st.device,
                frozen=st.frozen.frozen and st.kind in _FROZEN_KINDS,
            )
            for domain, st in counted
        )
        resets = {d: st.track.resets for d, st in counted}
        glitches = {d: st.track.glitches for d, st in counted}
        return Sample(readings=readings, resets=resets, problems=problems, glitches=glitches)

    def _host_busy(self) -> float | None:
        if self._host_busy_s is None:
            return None
        try:
            return self._host_busy_s()
        except Exception as exc:  # a broken /proc must not stop energy reads
            logger.debug("host busy time unreadable: %s", exc)
            return None

    @property
    def frozen_domains(self) -> frozenset[str]:
        """Domains whose counters stopped while the host was busy (not measurements)."""
        return frozenset(
            d
            for d, st in self._domains.items()
            if st.frozen.frozen and st.kind in _FROZEN_KINDS and st.mirror_of is None
        )

    @property
    def mirrors(self) -> dict[str, str]:
        """Domain -> the domain whose counter it repeats (not counted)."""
        return {d: st.mirror_of for d, st in self._domains.items() if st.mirror_of is not None}

    def _watch_frozen(
        self, domain: str, st: _DomainState, zone: _Zone, now: float, busy: float | None
    ) -> None:
        raw = st.raw if st.raw is not None else 0
        was = st.frozen.frozen
        since = st.frozen.since
        busy_then = st.frozen.busy_at_since
        if st.frozen.observe(raw, now, busy) == was or st.kind not in _FROZEN_KINDS:
            return
        if st.frozen.frozen:
            logger.warning(
                "RAPL %s (%s): energy_uj has stayed at %d for %.0f s while the host was busy "
                "(%.1f CPU-seconds): a frozen counter is not a measurement (a VM exposing "
                "RAPL files it does not update?). Marked jouled_domain_frozen 1; it covers no "
                "host component, so the estimate takes over where it runs (estimate: auto)",
                domain,
                zone.zone_id,
                raw,
                now - since,
                (busy or 0.0) - (busy_then or 0.0),
            )
        else:
            logger.info("RAPL %s (%s) moves again: measuring", domain, zone.zone_id)

    def _match_mirrors(self) -> None:
        """Find zones whose counters agree read after read: one meter exposed twice."""
        moving = sorted(
            (d, st)
            for d, st in self._domains.items()
            if st.moved and st.raw is not None and st.mirror_of is None
        )
        for i, (domain, st) in enumerate(moving):
            assert st.raw is not None
            twin = next(
                (
                    d
                    for d, other in moving[:i]
                    if other.kind is st.kind
                    and other.device == st.device
                    and other.mirror_candidate is None
                    and other.raw is not None
                    and abs(other.raw - st.raw) <= _MIRROR_TOLERANCE_UJ
                ),
                None,
            )
            if twin is None or twin != (st.mirror_candidate or twin):
                if st.held_uj:
                    st.cumulative_uj += st.held_uj  # they parted: the energy was its own
                st.mirror_candidate, st.mirror_reads, st.held_uj = None, 0, 0
                continue
            if st.mirror_candidate is None:
                # This read's energy was counted before the likeness showed: hold it too.
                st.cumulative_uj -= st.last_delta
                st.held_uj += st.last_delta
            st.mirror_candidate = twin
            st.mirror_reads += 1
            if st.mirror_reads >= _MIRROR_CONFIRM_READS:
                st.mirror_of = twin
                st.held_uj = 0
                zone_id = st.zone.zone_id if st.zone is not None else st.last_zone_id
                twin_zone = self._domains[twin].last_zone_id
                logger.warning(
                    "RAPL %s (%s) reads the same counter as %s (%s), %d reads in a row: one "
                    "meter exposed twice (AMD multi-die parts do this); counting %s only",
                    domain,
                    zone_id,
                    twin,
                    twin_zone,
                    st.mirror_reads,
                    twin,
                )

    def _read_energy(self, zone: _Zone) -> tuple[int | None, str | None]:
        """(raw µJ, None), or (None, why): "vanished" when the zone is gone."""
        path = zone.energy_path
        try:
            text = self._read_text(path)
        except PermissionError:
            return None, f"permission denied reading {path} (root-only since Linux 5.10)"
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ENOENT, errno.ENODEV):
                return None, "vanished"
            return None, _describe_oserror(exc, path)
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit()):
            return None, f"unparseable {path}: {stripped[:40]!r}"
        return int(stripped), None

    def _advance(self, domain: str, st: _DomainState, zone: _Zone, raw: int, now: float) -> None:
        track = st.track
        base, base_t = track.base, track.base_t
        # The first read of a counter is a baseline: energy before it is unknowable.
        step = track.feed(raw, now)
        st.ever_read = True
        st.raw, st.moved = raw, base is not None and raw != base
        st.last_delta = step.delta
        if step.event is Event.PENDING:
            logger.info(
                "RAPL %s (%s): %d uJ after %d uJ %.3f s earlier is implausible; held until the "
                "next read tells a glitch from a reset",
                domain,
                zone.zone_id,
                raw,
                base,
                now - base_t,
            )
        if step.dropped is not None:
            logger.warning(
                "RAPL counter glitch on %s (%s): one read of %d uJ fits neither the reads "
                "before nor after it; dropped (jouled_domain_glitches_total)",
                domain,
                zone.zone_id,
                step.dropped,
            )
        if step.event is Event.RESET:
            logger.warning(
                "RAPL counter reset on %s (%s): went from %d to %d uJ, confirmed by the next "
                "read; counted %d uJ since the reset",
                domain,
                zone.zone_id,
                base,
                raw,
                step.delta,
            )
        if (
            step.event is Event.WRAP
            and track.learned_range == step.wrap_range
            and (zone.range_assumed and step.wrap_range is not None)
        ):
            logger.info(
                "RAPL %s (%s) wrapped: its unpublished range is %d uJ (assumed from now on)",
                domain,
                zone.zone_id,
                step.wrap_range,
            )
        if st.mirror_candidate is not None:
            st.held_uj += step.delta  # released or dropped by _match_mirrors
        else:
            st.cumulative_uj += step.delta

    # -- diagnosis -----------------------------------------------------------------------
    def check(self) -> list[CheckRow]:
        return check_rapl(self.root, self._read_text)

    def close(self) -> None:
        """Nothing is held open between reads; present for the protocol."""


def check_rapl(
    root: Path = DEFAULT_ROOT,
    read_text: Callable[[Path], str] | None = None,
    *,
    wait_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckRow]:
    """One row per zone under ``root`` for ``jouled check``; never raises.

    A function as well as a method, so ``jouled check`` can report an absent tree (where
    the collector's constructor raises ``HardwareAbsent``). With ``wait_s`` > 0 every
    readable zone is read again after that long: a package, dram or psys counter that has
    not moved is frozen (a real one moves by joules every second, even idle), and a zone
    whose counter equals another's is a mirror, counted once.
    """
    reader = read_text if read_text is not None else read_sysfs_text
    try:
        scan = _scan(Path(root), reader)
    except Exception as exc:  # check() reports; it never raises
        return [CheckRow("rapl", "-", False, f"cannot scan {root}: {exc}", ABSENT_FIX)]
    if not scan.any_entry:
        return [
            CheckRow(
                "rapl", "-", False, f"no RAPL powercap zones under {root}", ABSENT_FIX, absent=True
            )
        ]
    rows: list[CheckRow] = []
    for entry, problem in sorted(scan.problems.items()):
        rows.append(CheckRow("rapl", str(Path(root) / entry), False, problem, _fix_for(problem)))
    used = [(z, None) for z in scan.zones] + [(z, msr) for z, msr in scan.duplicates]
    first: dict[int, int] = {}  # row index -> raw value, for the zones counted
    for zone, duplicate_of in used:
        row, raw = _check_zone(zone, duplicate_of, reader)
        if raw is not None and duplicate_of is None:
            first[len(rows)] = raw
        rows.append(row)
    if wait_s > 0 and first:
        sleep(wait_s)
        _probe_motion(
            rows,
            first=first,
            zones=[z for z, _ in used],
            offset=len(scan.problems),
            reader=reader,
            wait_s=wait_s,
        )
    return rows


def _probe_motion(
    rows: list[CheckRow],
    *,
    first: dict[int, int],
    zones: list[_Zone],
    offset: int,
    reader: Callable[[Path], str],
    wait_s: float,
) -> None:
    """Second read of each counted zone: flag frozen counters and mirrored zones in place."""
    second: dict[int, int] = {}
    for i in first:
        try:
            text = reader(zones[i - offset].energy_path).strip()
        except OSError:
            continue
        if text.isascii() and text.isdigit():
            second[i] = int(text)
    seen: list[int] = []
    for i, raw in sorted(second.items()):
        zone, row = zones[i - offset], rows[i]
        if raw == first[i]:
            if zone.kind in _FROZEN_KINDS:
                rows[i] = replace(
                    row,
                    readable=False,
                    detail=f"{row.detail}; energy_uj did not move in {wait_s:g} s: frozen, "
                    "not a measurement",
                    fix=FROZEN_FIX,
                )
            continue
        twin = next(
            (
                j
                for j in seen
                if zones[j - offset].kind is zone.kind
                and zones[j - offset].device == zone.device
                and abs(second[j] - raw) <= _MIRROR_TOLERANCE_UJ
                and abs(first[j] - first[i]) <= _MIRROR_TOLERANCE_UJ
            ),
            None,
        )
        if twin is not None:
            rows[i] = replace(
                row,
                detail=f"{row.detail}; same counter as {zones[twin - offset].base}: one meter, "
                "counted once",
            )
        else:
            seen.append(i)


_DRIVER_FIX = "the kernel driver failed this read; check dmesg for intel_rapl errors"


def _fix_for(problem: str) -> str:
    return PERMISSION_FIX if "EACCES" in problem or "EPERM" in problem else _DRIVER_FIX


def _check_zone(
    zone: _Zone, duplicate_of: _Zone | None, reader: Callable[[Path], str]
) -> tuple[CheckRow, int | None]:
    target = str(zone.path)
    label = f"{zone.base} ({zone.zone_id})"
    if duplicate_of is not None:
        label += f", duplicate of {duplicate_of.zone_id}, not counted"
    if zone.error is not None:
        row = CheckRow("rapl", target, False, f"{label}: {zone.error}", _fix_for(zone.error))
        return row, None
    path = zone.energy_path
    try:
        text = reader(path).strip()
    except PermissionError:
        row = CheckRow(
            "rapl", target, False, f"{label}: permission denied reading {path}", PERMISSION_FIX
        )
        return row, None
    except OSError as exc:
        row = CheckRow(
            "rapl", target, False, f"{label}: {_describe_oserror(exc, path)}", _DRIVER_FIX
        )
        return row, None
    if not (text.isascii() and text.isdigit()):
        row = CheckRow(
            "rapl",
            target,
            False,
            f"{label}: unparseable {path}: {text[:40]!r}",
            "the kernel returned garbage; check dmesg for intel_rapl errors",
        )
        return row, None
    if zone.max_range_uj is None:
        detail = (
            f"{label}, max_energy_range_uj reads 0: counted anyway, wraps unfolded as a "
            "32-bit energy-status counter"
        )
    else:
        detail = f"{label}, max range {zone.max_range_uj // 1_000_000} J"
    return CheckRow("rapl", target, True, detail), int(text)
