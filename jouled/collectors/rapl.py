"""RAPL energy through the Linux powercap sysfs tree (``/sys/class/powercap``).

A *zone* is one RAPL meter: ``intel-rapl:N`` is socket N's *package* (cores + uncore),
``intel-rapl:N:M`` a subzone inside it (core, uncore, or dram, which sysfs nests under the
package although its energy is not part of the package's). ``psys`` is the whole platform.
Each zone's ``energy_uj`` wraps at ``max_energy_range_uj``; this collector unfolds it into
cumulative joules per *domain* (``package-0``, ``core-0``, ``dram-0``, ``psys``).

Over 400 lines because it is one collector (zone scan, reads, per-zone wrap, reset and
glitch handling, its check); the counter arithmetic is in counter.py, the sysfs layout in
powercap.py, the check's motion probe in rapl_check.py.
"""

from __future__ import annotations

import errno
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
from jouled.collectors.powercap import (
    ABSENT_FIX,
    ASSUMED_RANGES_UJ,
    DEFAULT_ROOT,
    FROZEN_FIX,
    FROZEN_KINDS,
    MIRROR_TOLERANCE_UJ,
    PERMISSION_FIX,
    Scan,
    Zone,
    describe_oserror,
    kernel_range_uj,
    parse_zone_name,
    read_sysfs_text,
    scan_tree,
)
from jouled.collectors.procstat import busy_or_none
from jouled.collectors.rapl_check import check_rapl

# Re-exported: callers import the RAPL names from here.
__all__ = [
    "ABSENT_FIX",
    "ASSUMED_RANGES_UJ",
    "DEFAULT_ROOT",
    "FROZEN_FIX",
    "PERMISSION_FIX",
    "RaplCollector",
    "check_rapl",
    "parse_zone_name",
    "read_sysfs_text",
]

logger = logging.getLogger(__name__)

# Slack on top of max power x elapsed time: covers scheduling jitter between reading the
# clock and the file when ticks are very short.
_MAX_DELTA_MARGIN = 1.5
_MAX_DELTA_FLOOR_UJ = 1_000_000
_REDISCOVER_EVERY = 60
_MIRROR_CONFIRM_READS = 3  # reads in a row that make two zones one meter


@dataclass(slots=True)
class _DomainState:
    kind: Kind
    device: str
    zone: Zone | None  # None while the zone has vanished
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
        scan = scan_tree(self.root, self._read_text)
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

    def _apply(self, scan: Scan) -> None:
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

    def _ranges_for(self, z: Zone, zones: list[Zone]) -> int | tuple[int, ...]:
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
            kernel_range_uj(14) // 1_000_000,
            kernel_range_uj(16) // 1_000_000,
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
        self._apply(scan_tree(self.root, self._read_text))

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
                frozen=st.frozen.frozen and st.kind in FROZEN_KINDS,
            )
            for domain, st in counted
        )
        resets = {d: st.track.resets for d, st in counted}
        glitches = {d: st.track.glitches for d, st in counted}
        return Sample(readings=readings, resets=resets, problems=problems, glitches=glitches)

    def _host_busy(self) -> float | None:
        return busy_or_none(self._host_busy_s)

    @property
    def frozen_domains(self) -> frozenset[str]:
        """Domains whose counters stopped while the host was busy (not measurements)."""
        return frozenset(
            d
            for d, st in self._domains.items()
            if st.frozen.frozen and st.kind in FROZEN_KINDS and st.mirror_of is None
        )

    @property
    def mirrors(self) -> dict[str, str]:
        """Domain -> the domain whose counter it repeats (not counted)."""
        return {d: st.mirror_of for d, st in self._domains.items() if st.mirror_of is not None}

    def _watch_frozen(
        self, domain: str, st: _DomainState, zone: Zone, now: float, busy: float | None
    ) -> None:
        raw = st.raw if st.raw is not None else 0
        was = st.frozen.frozen
        since = st.frozen.since
        busy_then = st.frozen.busy_at_since
        if st.frozen.observe(raw, now, busy) == was or st.kind not in FROZEN_KINDS:
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
        """Find zones whose counters agree read after read: one meter exposed twice; and
        mirrors whose counters part again (they were two meters after all)."""
        self._part_mirrors()
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
                    and abs(other.raw - st.raw) <= MIRROR_TOLERANCE_UJ
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

    def _part_mirrors(self) -> None:
        """A confirmed mirror whose counter no longer agrees with its twin's is its own
        meter: it is counted again from this read (the energy while it looked like its
        twin cannot be told apart and stays uncounted). Without this it was dropped for the
        daemon's life, silently, after three reads that happened to agree."""
        for domain, st in sorted(self._domains.items()):
            twin = self._domains.get(st.mirror_of) if st.mirror_of is not None else None
            if twin is None or not (st.moved and twin.moved):
                continue
            if st.raw is None or twin.raw is None:
                continue
            if abs(twin.raw - st.raw) <= MIRROR_TOLERANCE_UJ:
                continue
            logger.warning(
                "RAPL %s no longer reads the same counter as %s (%d uJ apart): two meters "
                "after all; counting %s again from now",
                domain,
                st.mirror_of,
                abs(twin.raw - st.raw),
                domain,
            )
            st.mirror_of = st.mirror_candidate = None
            st.mirror_reads = st.held_uj = 0

    def _read_energy(self, zone: Zone) -> tuple[int | None, str | None]:
        """(raw µJ, None), or (None, why): "vanished" when the zone is gone."""
        path = zone.energy_path
        try:
            text = self._read_text(path)
        except PermissionError:
            return None, f"permission denied reading {path} (root-only since Linux 5.10)"
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ENOENT, errno.ENODEV):
                return None, "vanished"
            return None, describe_oserror(exc, path)
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit()):
            return None, f"unparseable {path}: {stripped[:40]!r}"
        return int(stripped), None

    def _advance(self, domain: str, st: _DomainState, zone: Zone, raw: int, now: float) -> None:
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
