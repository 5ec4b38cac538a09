"""The Linux powercap sysfs tree (``/sys/class/powercap``): its RAPL zones, what they are,
and what never changes in them (name, range).

A *zone* is one RAPL meter: ``intel-rapl:N`` is socket N's *package* (cores + uncore),
``intel-rapl:N:M`` a subzone inside it (core, uncore, or dram, which sysfs nests under the
package although its energy is not part of the package's). ``psys`` is the whole platform.
``intel-rapl-mmio:N`` repeats a package on recent client CPUs. Read by the RAPL collector
(``rapl.py``) and by ``jouled check`` (``rapl_check.py``).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jouled.collectors.base import Kind

DEFAULT_ROOT = Path("/sys/class/powercap")
_MSR_PREFIX = "intel-rapl:"
_MMIO_PREFIX = "intel-rapl-mmio:"
# Zones of one socket and kind whose raw counters agree within this many µJ, moving, this
# many reads in a row, are one meter exposed twice (AMD multi-die parts expose
# package-0-die-N with one counter). Sockets are never compared: each has its own meter.
MIRROR_TOLERANCE_UJ = 100_000
# Only these kinds feed host components, so only they are judged frozen: a client part's
# uncore (integrated GPU) legitimately sits at 0 while power-gated.
FROZEN_KINDS = frozenset({Kind.PACKAGE, Kind.DRAM, Kind.PSYS})

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


def kernel_range_uj(esu: int) -> int:
    """``max_energy_range_uj`` as the kernel computes it for energy-status-unit ``esu``: the
    32-bit counter mask times the unit, the unit kept in whole nJ (intel_rapl_common.c)."""
    unit_nj = 1_000_000_000 // (1 << esu)
    return 0xFFFFFFFF * unit_nj // 1000


# Candidate ranges where max_energy_range_uj reads 0: the energy status MSR is 32 bits wide,
# its unit 1/2^ESU J with ESU a 5-bit field (14 on Intel packages, 61 µJ; 16 on AMD and on
# Intel server DRAM, 15.3 µJ). Tiny ranges are pruned once the counter is seen above them.
ASSUMED_RANGES_UJ: tuple[int, ...] = tuple(sorted({kernel_range_uj(esu) for esu in range(32)}))

_PACKAGE_RE = re.compile(r"package-(\d+)(?:-die-(\d+))?")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_SUBZONE_KINDS = {"core": Kind.CORE, "uncore": Kind.UNCORE, "dram": Kind.DRAM}


def read_sysfs_text(path: Path) -> str:
    """The default reader: one ``read()`` of the file, as sysfs attributes expect."""
    return path.read_text(encoding="ascii")


@dataclass(frozen=True, slots=True)
class Zone:
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
class Scan:
    zones: list[Zone]  # MSR zones, then MMIO zones that no MSR zone duplicates
    duplicates: list[tuple[Zone, Zone]]  # (mmio zone, the MSR zone it duplicates)
    problems: dict[str, str]  # zone id -> why it was skipped
    any_entry: bool  # the tree has RAPL entries at all


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


def describe_oserror(exc: OSError, path: Path) -> str:
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


def scan_tree(root: Path, read_text: Callable[[Path], str]) -> Scan:
    """List the zones under ``root`` and read what never changes (name, range)."""
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return Scan([], [], {}, any_entry=False)
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
            problems[entry] = describe_oserror(exc, path)
    found: list[Zone] = []
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
            error = describe_oserror(exc, range_path)
        found.append(
            Zone(
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
    duplicates: list[tuple[Zone, Zone]] = []
    for z in found:
        if z.mmio:
            if z.base in msr_by_base:
                duplicates.append((z, msr_by_base[z.base]))
            else:
                zones.append(z)
    return Scan(zones, duplicates, problems, any_entry=bool(parsed))
