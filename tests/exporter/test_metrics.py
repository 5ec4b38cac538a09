import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jouled.exporter.metrics import SnapshotCollector
from jouled.pipeline.snapshot import CollectorStatus, Snapshot, frozen

GOLDEN = Path(__file__).parent / "golden_metrics.txt"


def sample_snapshot() -> Snapshot:
    return Snapshot(
        seq=42,
        wall_time=1_700_000_042.0,
        monotonic_time=5042.0,
        domain_energy_j=frozen(
            {
                ("package-0", "rapl"): 2520.5,
                ("core-0", "rapl"): 1800.25,
                ("dram-0", "rapl"): 210.0,
                ("gpu-0", "nvml"): 12600.0,
            }
        ),
        host_energy_j=frozen(
            {("cpu", "rapl"): 2520.5, ("dram", "rapl"): 210.0, ("gpu", "nvml"): 12600.0}
        ),
        counter_resets=frozen({("gpu-0", "nvml"): 1}),
        counter_glitches=frozen({("package-0", "rapl"): 1, ("gpu-0", "nvml"): 0}),
        counter_frozen=frozen({("package-0", "rapl"): False, ("dram-0", "rapl"): True}),
        collectors=frozen(
            {
                "rapl": CollectorStatus(True, 0.0005),
                "nvml": CollectorStatus(
                    False, 0.25, "GPU is lost", frozen({"gpu-1": "GPU fell off the bus"})
                ),
            }
        ),
    )


def render(snapshot: Snapshot) -> str:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot))
    text = generate_latest(registry).decode()
    # The Python version in build_info depends on the machine; the golden file pins the rest.
    return re.sub(r'python="[^"]*"', 'python="X"', text)


def test_metrics_match_the_golden_file() -> None:
    text = render(sample_snapshot())
    if os.environ.get("JOULED_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_values_round_trip_through_the_prometheus_parser() -> None:
    fams = {f.name: f for f in text_string_to_metric_families(render(sample_snapshot()))}
    domain = {
        tuple(s.labels.values()): s.value
        for s in fams["jouled_domain_energy_joules"].samples
        if s.name.endswith("_total")
    }
    assert domain[("package-0", "rapl")] == 2520.5
    up = {s.labels["collector"]: s.value for s in fams["jouled_collector_up"].samples}
    assert up == {"nvml": 0.0, "rapl": 1.0}
    host_types = fams["jouled_host_energy_joules"].type
    assert host_types == "counter"


def test_golden_metrics_pass_promtool_lint() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian package prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    out = subprocess.run(
        [promtool, "check", "metrics"],
        input=render(sample_snapshot()),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == ""
