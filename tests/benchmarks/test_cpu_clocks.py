"""The benchmarks' CPU clocks: a process's CPU time counts its threads that have ended."""

import subprocess
import sys
import time

from benchmarks._util import process_cpu_ns, thread_cpu

# A child that spends ~0.2 s of CPU in a thread that then ends, as CodeCarbon's tracker
# does once a measurement (a new timer thread each time), then waits to be read.
CHILD = """
import sys, threading, time
def burn():
    t = time.thread_time()
    while time.thread_time() - t < 0.2:
        pass
print("ready", flush=True)
sys.stdin.readline()
th = threading.Thread(target=burn)
th.start()
th.join()
print("done", flush=True)
sys.stdin.readline()
"""


def test_process_cpu_counts_threads_that_ended_where_a_thread_sum_does_not() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        ns0, threads0 = process_cpu_ns(proc.pid), sum(thread_cpu(proc.pid).values())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
        time.sleep(0.05)
        used_s = (process_cpu_ns(proc.pid) - ns0) / 1e9
        thread_sum_s = sum(thread_cpu(proc.pid).values()) - threads0
    finally:
        proc.kill()
        proc.wait()
    assert used_s >= 0.19  # the thread's 0.2 s, counted after it ended
    assert thread_sum_s < 0.1  # the live threads' sum lost it: the bug the clock fixes


def test_host_speed_is_in_us_per_thousand_python_steps_and_us_per_system_call() -> None:
    from benchmarks._util import _python_step, host_speed

    speed = host_speed(repeats=3, steps=2_000)
    assert set(speed) == {"python_us", "syscall_us"}
    t0 = time.thread_time_ns()
    for _ in range(5):
        _python_step(1_000)
    direct_us = (time.thread_time_ns() - t0) / 5 / 1e3
    # The best of 3 against a plain average, on a host whose speed moves: the same order.
    assert direct_us / 5 < speed["python_us"] < direct_us * 5
    assert 0.0 < speed["syscall_us"] < 100.0  # one clock_gettime: ~0.1-2 µs
