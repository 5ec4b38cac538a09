"""Two builds of jouled side by side under the same load: which one costs less CPU.

A change that takes 5 % off the daemon's CPU cannot be seen between two runs of
``benchmarks.daemon_cpu`` on a shared VM, whose speed moves by twofold within an hour
(docs/BENCHMARKS.md, "Hosts"). Here both daemons run at once, on the same host processes
(10 workloads, 200 of ~1,000 matched), each sent the same rate by its own OpenTelemetry SDK
sender (``benchmarks.span_sender``, as in ``daemon_cpu``), so every window sees the same
host for both. After the warm-up (settle delay + 10 s) each of ``--windows`` windows gives
each daemon's CPU (utime + stime, all threads, ms a second) and its largest RSS.

The daemon started second has been measured to run a few % cheaper on the AMD host (the
twentieth pass of issue 18), so the comparison runs twice, with fresh daemons, in both
start orders, and is read per order: B's mean against A's, and in how many windows B was
lower. A change counts only where B is lower in both orders.

A and B are each a directory (a checkout whose compiled extensions are built: ``make venv``
or ``pip install -e .`` there) or a git revision of this repository, exported with ``git
archive`` and its extensions built in place (``setup.py build_ext --inplace``, a few seconds
each). ``--python-a`` and ``--python-b`` pick the interpreters (a venv made with another
``python3`` and ``pip install -e .`` there: the twentieth pass's Debian-against-pyenv run).

    .venv/bin/python -m benchmarks.ab --a HEAD~1 --b . --rate 1000 --transport grpc
    .venv/bin/python -m benchmarks.ab --a . --b . --python-b /tmp/dvenv/bin/python
    .venv/bin/python -m benchmarks.ab --a HEAD --b HEAD \\
        --patch-b benchmarks/patches/ceiling_receive_only.patch     # a ceiling

Writes ``benchmarks/results/ab.json`` (``--name`` another file): each window's figures,
each order's summary and the CPU of each daemon's thread groups.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._util import (
    ROOT,
    daemon,
    exit_on_sigterm,
    interpreter,
    save,
    sleepers,
    thread_cpu,
)
from benchmarks.daemon_cpu import (
    DEFAULT_SETTLE_S,
    GROUPS,
    YOUNG_S,
    _host_speed_row,
    _log,
    _received,
    _sender,
    _threads,
    _window,
    loaded_config,
)


def _run(cmd: list[str], cwd: Path, failed: str) -> None:
    """``cmd`` in ``cwd``; RuntimeError saying ``failed`` and the command's last words."""
    out = subprocess.run(cmd, cwd=cwd, check=False, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{failed}: {out.stderr.strip()[-800:]}")


def _git(*args: str, cwd: Path = ROOT) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


@contextlib.contextmanager
def tree(spec: str, python: str, patch: Path | None = None) -> Iterator[tuple[Path, str]]:
    """The checkout ``spec`` names, ready to run: (its root, what it is).

    A directory holding ``jouled/`` is used as it is (``interpreter`` then checks that
    ``python`` can load the extensions built there). Anything else is a git revision of this
    repository: its ``jouled`` package is exported into a temporary directory, which is
    removed on exit, ``patch`` is applied there (``git apply``: a change to try, or one of
    the ceilings in benchmarks/patches), and its extensions are built there with ``python``.

    Raises RuntimeError where ``spec`` is neither, a patch is given for a directory, the
    patch does not apply, or the build fails (with git's or the compiler's last words)."""
    path = Path(spec)
    if (path / "jouled" / "__init__.py").is_file():
        if patch is not None:
            raise RuntimeError(f"a patch applies to a revision, not to the checkout {spec}")
        root = path.resolve()
        try:
            dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=root) != ""
            head = _git("rev-parse", "--short", "HEAD", cwd=root)
        except RuntimeError:  # not a git checkout: an exported tree, a scratch copy
            yield root, str(root)
            return
        yield root, f"{root} at {head}{' with uncommitted changes' if dirty else ''}"
        return
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except RuntimeError:
        raise RuntimeError(
            f"{spec!r} is neither a checkout (a directory holding jouled/) nor a revision of {ROOT}"
        ) from None
    with tempfile.TemporaryDirectory(prefix="jouled-ab-") as tmp:
        root = Path(tmp)
        archive = subprocess.run(
            ["git", "archive", commit, "jouled", "setup.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True, timeout=120)
        if patch is not None:
            _run(["git", "apply", str(patch.resolve())], root, f"{patch} does not apply to {spec}")
        _run([python, "setup.py", "-q", "build_ext", "--inplace"], root, f"building {spec} failed")
        yield root, f"{spec} ({commit[:10]})" + (f" + {patch}" if patch is not None else "")


def unbuilt(root: Path) -> list[str]:
    """The C sources in ``root``'s jouled with no extension built beside them (setup.py's
    extensions are optional: a failed build leaves the pure-Python twin in use, which a
    comparison would then measure)."""
    return sorted(
        str(c.relative_to(root))
        for c in root.joinpath("jouled").rglob("_*.c")
        if not any(c.parent.glob(c.stem + ".*.so"))
    )


def _imports_from(python: str, root: Path) -> Path:
    """Where ``python -m jouled`` run in ``root`` imports jouled from (the daemon's cwd comes
    first on its path; an editable install elsewhere must not win)."""
    out = subprocess.run(
        [python, "-c", "import jouled; print(jouled.__file__)"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Path(out.stdout.strip()).parent.parent


def _round(
    order: list[str],
    roots: dict[str, Path],
    pythons: dict[str, str],
    *,
    rate: int,
    transport: str,
    windows: int,
    window_s: float,
    settle: float | None,
) -> dict[str, Any]:
    """Both daemons started in ``order``, their senders likewise, the warm-up, the windows."""
    warm = (DEFAULT_SETTLE_S if settle is None else settle) + 10
    seconds = warm + windows * (window_s + 1.0) + 20
    with contextlib.ExitStack() as stack:
        d = {}
        for name in order:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            d[name] = stack.enter_context(
                daemon(tmp, loaded_config(settle, rate), pythons[name], roots[name])
            )
        for name in order:
            cfg = d[name].cfg["ingest"]
            endpoint = cfg["grpc_listen" if transport == "grpc" else "listen"]
            stack.enter_context(_sender(endpoint, transport, rate, seconds))
        _log(f"order {' then '.join(order)}: warm-up {warm:.0f} s")
        time.sleep(warm)
        names = sorted(d)
        pids = [d[n].pid for n in names]
        th0 = {n: thread_cpu(d[n].pid) for n in names}
        n0 = {n: _received(d[n]) for n in names}
        rows = []
        for i in range(windows):
            cpu, wall, rss, _clock = _window(pids, window_s)
            row: dict[str, Any] = {"window_s": round(wall, 2), **_host_speed_row()}
            for n, c, r in zip(names, cpu, rss, strict=True):
                row[n] = {"cpu_ms_per_s": round(1e3 * c / wall, 3), "rss_mb": r}
            rows.append(row)
            _log(
                f"order {' then '.join(order)}: window {i + 1}/{windows}: "
                + ", ".join(
                    f"{n} {row[n]['cpu_ms_per_s']:.2f} ms/s {row[n]['rss_mb']:.1f} MB"
                    for n in names
                )
                + f", host {row.get('host_python_us', float('nan')):.0f} us"
            )
        wall_all = sum(r["window_s"] for r in rows)
        spans = {n: (_received(d[n]) - n0[n]) / wall_all for n in names}
        threads = {n: _threads(th0[n], thread_cpu(d[n].pid), wall_all) for n in names}
    return {"order": order, "windows": rows, "spans_per_s": spans, "threads_ms_per_s": threads}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """One order's verdict: each daemon's mean and median ms a second and max RSS, B's mean
    against A's in %, and in how many windows B was lower."""
    rows = result["windows"]
    out: dict[str, Any] = {"order": " then ".join(result["order"])}
    for n in ("a", "b"):
        cpu = [r[n]["cpu_ms_per_s"] for r in rows]
        out[n] = {
            "cpu_ms_per_s_mean": round(statistics.fmean(cpu), 3),
            "cpu_ms_per_s_median": round(statistics.median(cpu), 3),
            "rss_mb_max": max(r[n]["rss_mb"] for r in rows),
        }
    a, b = out["a"]["cpu_ms_per_s_mean"], out["b"]["cpu_ms_per_s_mean"]
    out["b_vs_a_percent"] = round(100 * (b - a) / a, 2) if a else float("nan")
    out["b_lower_in"] = sum(r["b"]["cpu_ms_per_s"] < r["a"]["cpu_ms_per_s"] for r in rows)
    out["windows"] = len(rows)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", default="HEAD", help="the baseline: a checkout or a git revision")
    p.add_argument("--b", default=".", help="the change: a checkout or a git revision")
    p.add_argument("--patch-a", type=Path, help="a patch to apply to A (a revision)")
    p.add_argument(
        "--patch-b",
        type=Path,
        help="a patch to apply to B (a revision), e.g. benchmarks/patches/ceiling_*.patch",
    )
    p.add_argument("--python-a", default=sys.executable, help="A's interpreter")
    p.add_argument("--python-b", default=sys.executable, help="B's interpreter")
    p.add_argument("--rate", type=int, default=1000, help="spans/s sent to each daemon")
    p.add_argument("--transport", choices=("http", "grpc"), default="grpc")
    p.add_argument("--windows", type=int, default=8, help="windows per start order")
    p.add_argument("--window", type=float, default=20.0, help="seconds per window")
    p.add_argument("--orders", choices=("both", "ab", "ba"), default="both")
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        help="shorter spans.settle_seconds for quick looks (the default 30 s otherwise)",
    )
    p.add_argument("--name", default="ab", help="the results file's name")
    args = p.parse_args()
    exit_on_sigterm()
    windows = max(1, min(args.windows, 60))
    window_s = max(1.0, min(args.window, 300.0))
    rate = max(1, min(args.rate, 10_000))
    pythons = {"a": args.python_a, "b": args.python_b}
    orders = {"both": [["a", "b"], ["b", "a"]], "ab": [["a", "b"]], "ba": [["b", "a"]]}
    with (
        tree(args.a, args.python_a, args.patch_a) as (root_a, what_a),
        tree(args.b, args.python_b, args.patch_b) as (root_b, what_b),
    ):
        roots = {"a": root_a, "b": root_b}
        for n, root in roots.items():
            if missing := unbuilt(root):
                raise RuntimeError(
                    f"{n.upper()} ({root}) has no extension built for {', '.join(missing)}: "
                    f"run {pythons[n]} -m pip install --no-deps -e . there"
                )
            got = _imports_from(pythons[n], root)
            if got != root:
                raise RuntimeError(f"{n.upper()} would import jouled from {got}, not {root}")
        results: dict[str, Any] = {
            "a": {"tree": what_a, "python": interpreter(args.python_a, root_a)},
            "b": {"tree": what_b, "python": interpreter(args.python_b, root_b)},
            "rate": rate,
            "transport": args.transport,
            "window_s": window_s,
            "rounds": [],
        }
        _log(f"A: {what_a}; B: {what_b}; {rate} spans/s each over {args.transport}")
        with sleepers(1000, groups=GROUPS, per_group=20):
            _log(f"letting the host's processes age {YOUNG_S + 5:.0f} s")
            time.sleep(YOUNG_S + 5)
            for order in orders[args.orders]:
                result = _round(
                    order,
                    roots,
                    pythons,
                    rate=rate,
                    transport=args.transport,
                    windows=windows,
                    window_s=window_s,
                    settle=args.settle_seconds,
                )
                result["summary"] = summary(result)
                results["rounds"].append(result)
    print(f"\nA: {what_a}\nB: {what_b}")
    for r in results["rounds"]:
        s = r["summary"]
        print(
            f"  {s['order']:>8}: A {s['a']['cpu_ms_per_s_mean']:6.2f} ms/s "
            f"{s['a']['rss_mb_max']:5.1f} MB, B {s['b']['cpu_ms_per_s_mean']:6.2f} ms/s "
            f"{s['b']['rss_mb_max']:5.1f} MB: B {s['b_vs_a_percent']:+.1f} %, lower in "
            f"{s['b_lower_in']} of {s['windows']} windows"
        )
    print(f"saved {save(args.name, results)}")


if __name__ == "__main__":
    main()
