"""Unfolding raw hardware energy counters into a monotonic total.

RAPL ``energy_uj`` wraps at ``max_energy_range_uj``; NVML's total-energy counter restarts
at zero when the driver reloads; both occasionally return one absurd value (a read of
``18446744073447456768`` µJ on a 100 W zone). A naive reader sees the counter go backwards
or leap forwards and cannot tell which. Two pieces here tell them apart, shared by every
collector:

* ``unfold`` classifies one step between two raw reads (plausible, wrap, reset, glitch);
* ``CounterTrack`` keeps one counter's state with one read of hindsight: an implausible read
  is held as a *suspect* and never becomes the comparison point. The next read decides: if
  it continues from the last good read, the suspect was a glitch (dropped and counted); if
  it continues from the suspect, the counter really restarted (a confirmed reset).

``FrozenWatch`` flags a counter that does not advance while the host is busy (a VM that
exposes RAPL files whose counters never move): such a meter is not a measurement.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Ranges = int | Sequence[int] | None


class Event(enum.StrEnum):
    NONE = "none"
    WRAP = "wrap"
    RESET = "reset"  # counter restarted (driver reload, GPU reset)
    GLITCH = "glitch"  # an implausible read; dropped rather than exported as a spike
    PENDING = "pending"  # CounterTrack: an implausible read held until the next one decides


@dataclass(frozen=True, slots=True)
class Step:
    delta: int  # energy in the counter's own unit since the previous read, never negative
    event: Event
    # CounterTrack: a raw read found to be a glitch on this step (dropped, counted once).
    dropped: int | None = None
    # The range a wrap was unfolded with (one of the candidates when the range is unknown).
    wrap_range: int | None = None


def _ranges(max_range: Ranges) -> tuple[int, ...]:
    if max_range is None:
        return ()
    if isinstance(max_range, int):
        return (max_range,)
    return tuple(sorted(max_range))


def unfold(
    prev: int,
    cur: int,
    max_range: Ranges,
    max_delta: int | None = None,
) -> Step:
    """Energy between two raw reads of a counter.

    ``max_range`` is the counter's range: it counts modulo this value (RAPL's
    ``max_energy_range_uj``, as Kepler unfolds it; node_exporter exports the raw counter and
    leaves the wrap to PromQL's reset handling); a sequence of candidate
    ranges when the range is not published (the smallest plausible wrap wins); or ``None``
    for a counter that never wraps (NVML's 64-bit mJ counter).

    ``max_delta`` is the most energy the domain can plausibly have spent since the previous
    read (its maximum power times the elapsed time, with margin), or ``None`` when unknown.
    It separates a wrap from a reset: after a wrap the energy is ``max_range - prev + cur``,
    which must be plausible; after a reset the counter restarted near zero and ``cur`` is
    the energy since the restart. A forward jump beyond ``max_delta`` is a glitch and counts
    as zero rather than a spike.
    """
    if prev < 0 or cur < 0:
        raise ValueError("raw energy counters are never negative")
    if cur >= prev:
        delta = cur - prev
        if max_delta is not None and delta > max_delta:
            return Step(0, Event.GLITCH)
        return Step(delta, Event.NONE)
    # The counter went backwards: a wrap or a reset.
    for rng in _ranges(max_range):
        if prev <= rng:
            wrapped = rng - prev + cur
            if max_delta is None or wrapped <= max_delta:
                return Step(wrapped, Event.WRAP, wrap_range=rng)
    # A reset: the counter restarted at zero, so ``cur`` accrued since then.
    if max_delta is not None and cur > max_delta:
        return Step(0, Event.RESET)
    return Step(cur, Event.RESET)


def _plausible(step: Step) -> bool:
    return step.event in (Event.NONE, Event.WRAP)


class CounterTrack:
    """One raw counter unfolded with one read of hindsight.

    ``max_range``: as for ``unfold``. ``bound(seconds)``: the most the counter can
    plausibly advance in ``seconds`` (max power x time, with margin), in its own unit.
    ``feed`` returns each read's ``Step``; ``glitches`` and ``resets`` count what was
    dropped and what was confirmed. Energy of the interval around a suspect read is not
    lost: it is counted when the next read decides (one read late).
    """

    def __init__(self, max_range: Ranges, bound: Callable[[float], int]) -> None:
        # A sequence: candidate ranges (the range is not published). Candidates below a
        # value the counter held are impossible and pruned; the first wrap fixes the range.
        self.max_range: Ranges = (
            max_range if isinstance(max_range, int | None) else tuple(sorted(max_range))
        )
        self.learned_range: int | None = None
        self._bound = bound
        self.base: int | None = None  # the last good read: the comparison point
        self.base_t = 0.0
        self.suspect: tuple[int, float] | None = None
        self.glitches = 0
        self.resets = 0

    def rebase(self) -> None:
        """Forget the comparison point: the next read is a new baseline (counter replaced)."""
        self.base = None
        self.suspect = None

    def restarted(self, raw: int, now: float) -> Step:
        """A read the caller knows follows a restart (a GPU reset after NVML lost the board):
        a reset without waiting for confirmation when the counter is below its last value."""
        if self.base is None or raw >= self.base:
            return self.feed(raw, now)
        since = raw if raw <= self._bound(now - self.base_t) else 0
        self.resets += 1
        self.base, self.base_t, self.suspect = raw, now, None
        return Step(since, Event.RESET)

    def feed(self, raw: int, now: float) -> Step:
        if raw < 0:
            raise ValueError("raw energy counters are never negative")
        if self.base is None:
            self.base, self.base_t, self.suspect = raw, now, None
            self._learn(raw, Step(0, Event.NONE))
            return Step(0, Event.NONE)
        base, base_t = self.base, self.base_t
        step = unfold(base, raw, self.max_range, self._bound(now - base_t))
        if _plausible(step):
            self._learn(raw, step)
            dropped = None
            if self.suspect is not None:
                dropped = self.suspect[0]
                self.glitches += 1
                self.suspect = None
            self.base, self.base_t = raw, now
            if dropped is not None:
                return Step(step.delta, Event.GLITCH, dropped, step.wrap_range)
            return step
        if self.suspect is not None:
            s_raw, s_t = self.suspect
            cont = unfold(s_raw, raw, self.max_range, self._bound(now - s_t))
            if _plausible(cont):
                self._learn(raw, cont)
                # The counter really restarted at the suspect read. Energy between the last
                # good read and the restart is unknowable; after a restart at zero the
                # suspect's value is what accrued since, when plausible.
                since = 0
                if s_raw < base and s_raw <= self._bound(s_t - base_t):
                    since = s_raw
                self.resets += 1
                self.suspect = None
                self.base, self.base_t = raw, now
                return Step(since + cont.delta, Event.RESET, wrap_range=cont.wrap_range)
            # The earlier suspect fits neither side: it was a glitch; this read is the new one.
            self.glitches += 1
            dropped = s_raw
            self.suspect = (raw, now)
            return Step(0, Event.PENDING, dropped)
        self.suspect = (raw, now)
        return Step(0, Event.PENDING)

    def _learn(self, raw: int, step: Step) -> None:
        if isinstance(self.max_range, int) or self.max_range is None:
            return
        if step.event is Event.WRAP and step.wrap_range is not None:
            self.max_range = self.learned_range = step.wrap_range
            return
        self.max_range = tuple(r for r in self.max_range if r >= raw) or None


class FrozenWatch:
    """Whether a counter stopped advancing while the host was busy.

    ``observe(raw, now, host_busy_s)`` with the host's cumulative busy CPU seconds (from
    /proc/stat); the counter is *frozen* once it has held one value for ``after_s`` seconds
    during which the host was busy for at least ``busy_s`` CPU seconds. A real RAPL or NVML
    counter moves by joules every second even at idle, so this never fires on hardware that
    measures. It clears once the counter has moved on ``clear_moves`` reads in a row: a
    counter that only moves now and then (one catch-up every few seconds) stays marked
    rather than flapping between measured and estimated, and its catch-up jumps, which
    cover time the estimate already counted, are not counted twice.
    """

    def __init__(self, after_s: float = 5.0, busy_s: float = 0.5, clear_moves: int = 3) -> None:
        self.after_s = after_s
        self.busy_s = busy_s
        self.clear_moves = clear_moves
        self._value: int | None = None
        self._since = 0.0
        self.busy_at_since: float | None = None
        self.frozen = False
        self._moves = 0  # reads in a row that moved, while frozen

    def observe(self, raw: int, now: float, host_busy_s: float | None) -> bool:
        """Feed one read; returns ``frozen`` after it."""
        if raw != self._value:
            self._value, self._since, self.busy_at_since = raw, now, host_busy_s
            if self.frozen:
                self._moves += 1
                if self._moves >= self.clear_moves:
                    self.frozen, self._moves = False, 0
            return self.frozen
        self._moves = 0
        if self.frozen:
            return True
        if self.busy_at_since is None:
            self.busy_at_since = host_busy_s
        if host_busy_s is None or self.busy_at_since is None:
            return self.frozen
        if now - self._since >= self.after_s and host_busy_s - self.busy_at_since >= self.busy_s:
            self.frozen = True
        return self.frozen

    @property
    def since(self) -> float:
        """When the counter last moved (the clock ``observe`` was given)."""
        return self._since
