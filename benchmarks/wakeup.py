"""What a thread hand-off costs on this host: the CPU one thread pays to wake another, the
way the daemon's threads pass work to each other (docs/BENCHMARKS.md, "Where the CPU goes").

    .venv/bin/python -m benchmarks.wakeup            # ~5 s

Each figure is µs of CPU around one call, the median (and 90th percentile) over
``--rounds``, the other thread asleep in the kernel first (``--pause-ms`` between rounds, as
between the daemon's hand-offs, which come a few dozen times a second):

- ``hot_syscall_us``: ``os.getppid()``, a system call that wakes no one, back to back (no
  pause): what a system call costs a thread that is running;
- ``syscall_us``: the same after the pause: a thread that ran again after sleeping a few ms
  (as each of the daemon's threads does at each hand-off) finds its caches, TLB and branch
  predictors cold; on a VM whose host ran others meanwhile, and with mitigations that flush
  them on each entry, that is most of a hand-off's cost: the floor of the figures below;
- ``pipe_wake_us``: ``os.write`` of one byte to a pipe another thread is blocked reading,
  by the writer's CPU clock (how ``loop.call_soon_threadsafe`` wakes an event loop: a byte
  to its self-pipe);
- ``pool_submit_us``: ``ThreadPoolExecutor.submit`` to an idle pool of one thread, by the
  caller's CPU clock (how the event loop hands a body to the ingest pool and a tick to the
  worker);
- ``round_trip_us``: the whole process's CPU for one round trip between two threads over
  two pipes (two wake-ups, both sides of each counted): what a hand-off and its answer cost
  the daemon in all.

On a bare-metal host a wake-up costs a few µs; on a VM each switch may leave the guest
(mitigations on every entry and exit), which is where the daemon's fixed costs grow most
from one host to another.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from benchmarks._util import save


def _quantiles(ns: list[int]) -> dict[str, float]:
    xs = sorted(ns)
    return {
        "p50": round(statistics.median(xs) / 1e3, 2),
        "p90": round(xs[int(0.9 * (len(xs) - 1))] / 1e3, 2),
    }


def _getppid() -> None:
    os.getppid()


def _each(
    rounds: int, pause_s: float, step: Callable[[], object], clock: Callable[[], int]
) -> list[int]:
    out = []
    for _ in range(rounds):
        if pause_s:
            time.sleep(pause_s)
        t0 = clock()
        step()
        out.append(clock() - t0)
    return out


def measure(rounds: int = 200, pause_s: float = 0.005) -> dict[str, dict[str, float]]:
    """The five figures of the module doc, each as {"p50": µs, "p90": µs}."""
    results: dict[str, dict[str, float]] = {}
    results["hot_syscall_us"] = _quantiles(_each(rounds, 0.0, _getppid, time.thread_time_ns))
    results["syscall_us"] = _quantiles(_each(rounds, pause_s, _getppid, time.thread_time_ns))

    # A reader blocked on a pipe; each write wakes it (it reads the byte and blocks again).
    r, w = os.pipe()

    def drain() -> None:
        while os.read(r, 1):
            pass

    def wake() -> None:
        os.write(w, b"x")

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        results["pipe_wake_us"] = _quantiles(_each(rounds, pause_s, wake, time.thread_time_ns))
    finally:
        os.close(w)
        reader.join()
        os.close(r)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(int).result()  # the thread exists and idles in its queue
        futures = []
        results["pool_submit_us"] = _quantiles(
            _each(rounds, pause_s, lambda: futures.append(pool.submit(int)), time.thread_time_ns)
        )
        for f in futures:
            f.result()

    # Ping-pong: process CPU (both threads) for one round trip.
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()

    def echo() -> None:
        while os.read(a_r, 1) == b"x":
            os.write(b_w, b"x")

    peer = threading.Thread(target=echo)
    peer.start()
    try:

        def trip() -> None:
            os.write(a_w, b"x")
            os.read(b_r, 1)

        results["round_trip_us"] = _quantiles(_each(rounds, pause_s, trip, time.process_time_ns))
    finally:
        os.write(a_w, b"q")
        peer.join()
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--pause-ms", type=float, default=5.0)
    args = parser.parse_args()
    results = measure(args.rounds, args.pause_ms / 1e3)
    for name, q in results.items():
        print(f"{name:16s} p50 {q['p50']:8.2f} µs   p90 {q['p90']:8.2f} µs")
    print("saved", save("wakeup", {"rounds": args.rounds, "pause_ms": args.pause_ms, **results}))


if __name__ == "__main__":
    main()
