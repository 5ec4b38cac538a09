"""Worker threads carry their names into the kernel, where top -H and /proc show them."""

from __future__ import annotations

import os
import threading

from jouled.threads import named_pool


def test_a_pools_threads_are_named_in_proc() -> None:
    pool = named_pool(2, "jouled-test-pool-long-name")
    try:
        tid, name = pool.submit(
            lambda: (threading.get_native_id(), threading.current_thread().name)
        ).result(10)
        with open(f"/proc/{os.getpid()}/task/{tid}/comm") as fh:
            comm = fh.read().strip()
    finally:
        pool.shutdown()
    assert name.startswith("jouled-test-pool-long-name_")
    assert comm == name.encode()[:15].decode()  # TASK_COMM_LEN: 15 bytes and a NUL
    with open(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/comm") as fh:
        assert fh.read().strip() != comm  # the caller's own name is left alone
