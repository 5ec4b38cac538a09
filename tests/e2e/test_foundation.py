"""The real daemon on a fake RAPL tree, scraped by a real Prometheus server."""

import signal
import time
from pathlib import Path

import pytest

from tests.support.procs import fake_powercap, http_get, jouled, wait_for, write_config
from tests.support.prometheus import run_prometheus

pytestmark = pytest.mark.slow


def test_60w_package_that_wraps_every_3s_reads_60w_through_prometheus(tmp_path: Path) -> None:
    # 180 J range at 60 W: the counter wraps every 3 s, i.e. several times in the window.
    with (
        fake_powercap(
            tmp_path,
            "--package-watts", "60", "--core-watts", "40", "--dram-watts", "6",
            "--max-range-uj", "180000000", "--tick", "0.02",
        ) as powercap,
        jouled(
            tmp_path,
            {
                "collectors": {
                    "rapl": {"enabled": True, "path": str(powercap)},
                    "nvml": {"enabled": False},
                },
            },
        ) as daemon,
        run_prometheus(
            tmp_path / "prom", [daemon.metrics_url.removeprefix("http://")], rule_files=()
        ) as prom,
    ):  # fmt: skip
        prom.wait_for_targets_up()
        time.sleep(13)
        pkg = prom.value('rate(jouled_domain_energy_joules_total{domain="package-0"}[10s])')
        assert pkg == pytest.approx(60.0, rel=0.03)
        cpu = prom.value(
            'rate(jouled_host_energy_joules_total{component="cpu",source="rapl"}[10s])'
        )
        assert cpu == pytest.approx(60.0, rel=0.03)
        dram = prom.value('rate(jouled_host_energy_joules_total{component="dram"}[10s])')
        assert dram == pytest.approx(6.0, rel=0.03)
        # No estimate where RAPL is readable, and no counter reset mistaken for a wrap.
        assert prom.result('jouled_host_energy_joules_total{source="estimate"}') == []
        assert prom.value('max_over_time(jouled_collector_up{collector="rapl"}[15s])') == 1.0
        resets = prom.result("jouled_domain_resets_total")
        assert all(float(r["value"][1]) == 0 for r in resets)
        # Host power never spikes across wraps: the per-scrape rate stays near 60 W.
        worst = prom.value(
            'max_over_time(rate(jouled_domain_energy_joules_total{domain="package-0"}[3s])[10s:1s])'
        )
        assert worst < 60 * 1.5
        out = daemon.proc.output()
        assert "RAPL: reading zones" in out


def test_on_a_host_without_rapl_it_says_so_and_estimates(tmp_path: Path) -> None:
    empty = tmp_path / "no-powercap"
    empty.mkdir()
    with jouled(
        tmp_path,
        {"collectors": {"rapl": {"path": str(empty)}, "nvml": {"enabled": False}}},
    ) as daemon:
        wait_for(lambda: 'source="estimate"' in daemon.metrics(), 10, "estimate series")
        text = daemon.metrics()
        assert 'jouled_host_energy_joules_total{component="cpu",source="estimate"}' in text
        assert 'source="rapl"' not in text
        head = daemon.proc.output().splitlines()[:8]
        assert any("RAPL: not available" in line for line in head)
        assert any('labelled source="estimate"' in line for line in head)


def test_sighup_with_a_bad_config_keeps_the_old_one_and_sigterm_exits_0(tmp_path: Path) -> None:
    empty = tmp_path / "no-powercap"
    empty.mkdir()
    cfg = {"collectors": {"rapl": {"path": str(empty)}, "nvml": {"enabled": False}}}
    with jouled(tmp_path, cfg) as daemon:
        daemon.config.write_text(daemon.config.read_text() + "interval: 0.001\n")
        daemon.proc.signal(signal.SIGHUP)
        wait_for(lambda: "reload rejected" in daemon.proc.output(), 10, "reload rejected")
        assert "key 'interval'" in daemon.proc.output()
        assert http_get(daemon.metrics_url + "/healthz")[0] == 200
        # A good config is applied on the next SIGHUP.
        good = {**cfg, "listen": daemon.metrics_url.removeprefix("http://")}
        good["ingest"] = {
            "listen": daemon.ingest_url.removeprefix("http://"),
            "grpc_listen": daemon.grpc,
        }
        good["collectors"] = {**cfg["collectors"], "estimate": {"cpu_max_watts_per_vcpu": 9.0}}
        write_config(daemon.config, good)
        daemon.proc.signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in daemon.proc.output(), 10, "reload")
        started = time.monotonic()
        daemon.proc.signal(signal.SIGTERM)
        assert daemon.proc.wait(10) == 0
        assert time.monotonic() - started < 5
        assert "stopped" in daemon.proc.output()


def test_a_bad_config_stops_startup_with_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("collectors:\n  rapl:\n    enabld: true\n")
    out = subprocess.run(
        [sys.executable, "-m", "jouled", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"jouled: config error: {cfg}:3: key 'collectors.rapl.enabld': unknown key "
        "(check spelling; see the configuration reference in README)"
    )
