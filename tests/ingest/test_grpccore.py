"""grpc-core's experiments chosen at start-up (jouled.ingest.grpccore): set only where the
operator has not, only for the grpcio versions measured, and known to the grpcio installed
(grpc-core logs an error for an experiment it does not know)."""

from __future__ import annotations

import subprocess
import sys

import grpc

from jouled.ingest import grpccore

SERVER = """
import asyncio, grpc
from grpc import aio

async def main():
    server = aio.server()
    handler = grpc.method_handlers_generic_handler(
        "s", {"m": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        print((await channel.unary_unary("/s/m")(b"ping", timeout=10)).decode())
    await server.stop(0)

asyncio.run(main())
"""


def test_unset_it_is_set_to_iomgrs_listener_for_a_measured_grpcio() -> None:
    env: dict[str, str] = {}
    assert grpccore.choose_experiments(env, (1, 85)) == "-event_engine_listener"
    assert env == {"GRPC_EXPERIMENTS": "-event_engine_listener"}
    assert grpccore.choose_experiments({}, grpccore.MEASURED[0]) == grpccore.EXPERIMENTS


def test_the_operators_value_wins_even_empty() -> None:
    for value in ("", "-event_engine_client", "event_engine_listener"):
        env = {"GRPC_EXPERIMENTS": value}
        assert grpccore.choose_experiments(env, (1, 85)) == value
        assert env == {"GRPC_EXPERIMENTS": value}


def test_a_grpcio_outside_the_measured_releases_keeps_its_defaults() -> None:
    for version in ((1, 86), (2, 0), (1, 59)):
        env: dict[str, str] = {}
        assert grpccore.choose_experiments(env, version) is None
        assert env == {}


def test_the_version_is_read_without_importing_grpc_and_matches_it() -> None:
    major, minor = (int(x) for x in grpc.__version__.split(".")[:2])
    assert grpccore.grpcio_version() == (major, minor)
    code = (
        "import sys; from jouled.ingest import grpccore; v = grpccore.grpcio_version();"
        "print(v is not None and 'grpc' not in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_the_installed_grpcio_knows_the_experiment_it_is_given() -> None:
    """A real grpc.aio server and client under the experiments the daemon would choose: the
    call is answered and grpc-core logs no unknown experiment (a grpcio that dropped it
    would, at every start: then move ``MEASURED`` back, or re-measure)."""
    env: dict[str, str] = {}
    chosen = grpccore.choose_experiments(env)
    installed = grpccore.grpcio_version()
    assert installed is not None
    if not grpccore.MEASURED[0] <= installed <= grpccore.MEASURED[1]:
        assert chosen is None  # a grpcio not measured keeps its defaults
        return
    assert chosen == grpccore.EXPERIMENTS
    out = subprocess.run(
        [sys.executable, "-c", SERVER],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ping"
    assert "experiment" not in out.stderr.lower(), out.stderr
