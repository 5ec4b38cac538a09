import os
import socket
from pathlib import Path

from jouled.daemon.systemd import Notifier


def listen(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock, path


def test_ready_watchdog_and_stopping_reach_the_socket(tmp_path: Path) -> None:
    sock, path = listen(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert n.enabled
    assert n.watchdog_interval_s == 2.0
    assert n.ready("serving")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=serving"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.reloading()
    assert sock.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    sock.close()


def test_abstract_namespace_socket() -> None:
    name = f"jouled-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
    assert sock.recv(64).startswith(b"READY=1")
    sock.close()


def test_without_systemd_nothing_is_sent_and_no_watchdog() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert not n.ready()


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval_s is None


def test_unreachable_socket_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready()
