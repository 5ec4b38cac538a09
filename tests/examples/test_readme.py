"""examples/inference_server/README.md, followed literally: the files it names exist, and
its commands in its order (jouled first, then the server) get the server's process
claimed by the workload its YAML names."""

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.procs import Proc, free_port, http_get, wait_for

REPO = Path(__file__).resolve().parents[2]
README = REPO / "examples" / "inference_server" / "README.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.S)


def test_every_repository_path_it_names_exists() -> None:
    text = README.read_text()
    named = set(re.findall(r"`((?:jouled|examples|docs|tests)/[\w./-]+)`", text))
    assert "jouled/client/reporter.py" in named
    assert [p for p in sorted(named) if not (REPO / p).exists()] == []


def commands() -> list[str]:
    [sh] = blocks("sh")
    joined = sh.replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in joined.splitlines() if line.strip()]


def test_the_start_order_is_one_story() -> None:
    cmds = commands()
    assert [c.split()[1] if "-m" not in c else c.split()[2] for c in cmds] == [
        "run",
        "examples.inference_server.server",
        "loadgen",
    ]
    assert "before jouled" not in README.read_text()  # the old, contradicting advice


@pytest.mark.slow
def test_its_commands_in_its_order_claim_the_server(tmp_path: Path) -> None:
    """jouled started first, the server after it: the pidfile claims the server's process."""
    cfg = yaml.safe_load(blocks("yaml")[0])
    pidfile = tmp_path / "inference.pid"
    metrics, ingest, server = free_port(), free_port(), free_port()
    text = yaml.safe_dump(cfg).replace("/tmp/inference.pid", str(pidfile))
    cfg = yaml.safe_load(text) | {"ingest": {"listen": f"127.0.0.1:{ingest}", "grpc_listen": None}}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg))
    subs = {
        ".venv/bin/jouled": f"{sys.executable} -m jouled",
        ".venv/bin/python": sys.executable,
        "my.yaml": str(tmp_path / "my.yaml"),
        "/tmp/inference.pid": str(pidfile),
        "9878": str(ingest),
        "8080": str(server),
    }
    pattern = re.compile("|".join(re.escape(k) for k in subs))  # one pass: no re-substitution
    argvs = [
        shlex.split(pattern.sub(lambda m: subs[m.group(0)], cmd).rstrip("&"))
        for cmd in commands()[:2]
    ]
    argvs[0] += ["--listen", f"127.0.0.1:{metrics}"]
    procs = [Proc(argvs[0], tmp_path / "jouled.log")]
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{metrics}/healthz")[0] == 200, 30, "jouled")
        procs.append(Proc(argvs[1], tmp_path / "server.log"))
        claimed = 'jouled_workload_processes{workload="inference"} 1.0'
        wait_for(
            lambda: claimed in http_get(f"http://127.0.0.1:{metrics}/metrics")[1],
            30,
            "the server's process claimed",
        )
        assert int(pidfile.read_text()) == procs[1].popen.pid
    finally:
        for p in reversed(procs):
            p.stop()
