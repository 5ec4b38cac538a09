"""README.md's tables against the code. The metric table against what a real daemon
exports: every family the table names is on /metrics, every family on /metrics is in the
table, no name is listed twice, and a row with one type gives each of its families that type.
The layout table: every package of jouled/ is listed, every path listed exists.

The daemon runs with embodied hardware, water and a (failing) grid provider configured, so
the optional carbon families are exported too (they appear only when configured, as the
table says)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.procs import free_port, jouled, wait_for
from tests.support.readme import README
from tests.support.readme import metric_rows as readme_rows


def exported_types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))


def test_the_table_names_each_family_once() -> None:
    names = [n for row, _ in readme_rows() for n in row]
    assert len(names) > 50
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


@pytest.mark.slow
def test_readme_table_is_what_a_daemon_exports(tmp_path: Path) -> None:
    cfg = {
        "interval": 0.5,
        "workloads": [{"name": "tests", "match": {"pid": 1}}],
        "cost": {
            "hardware": [
                {"name": "A100", "per_hour": 3.3741, "embodied_kgco2e": 150, "lifetime_years": 5}
            ],
            # A provider whose polls fail (nothing listens there): its up/errors families.
            "grid_intensity": {
                "provider": "uk_national_grid",
                "url": f"http://127.0.0.1:{free_port()}",
                "interval": 0.5,
                "timeout": 0.5,
            },
            "wue": 1.8,
            "grid_water_intensity": 3.1,
        },
    }
    with jouled(tmp_path, cfg) as daemon:
        # The carbon families come with the first ticks' cost books.
        def carbon_books() -> str | None:
            text = daemon.metrics()
            wanted = ("jouled_host_water_liters_total{", "jouled_grid_provider_errors_total{")
            return text if all(w in text for w in wanted) else None

        text = wait_for(carbon_books, 30, "the water series")
    exported = exported_types(text)
    listed = {n: kind for row, kind in readme_rows() for n in row}
    assert sorted(set(listed) - set(exported)) == [], "README lists families not exported"
    assert sorted(set(exported) - set(listed)) == [], "exported families missing from README"
    for row, kind in readme_rows():
        if kind in ("counter", "gauge", "histogram"):
            assert {n: exported[n] for n in row} == dict.fromkeys(row, kind)


def test_the_layout_table_names_every_package_and_only_real_paths() -> None:
    section = README.read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(jouled/[\w./]+|[a-z]+/[\w/]*)`", section))
    repo = README.parent
    assert sorted(p for p in named if not (repo / p.rstrip("/")).exists()) == []
    packages = {
        f"jouled/{d.name}" for d in (repo / "jouled").iterdir() if (d / "__init__.py").exists()
    }
    assert sorted(packages - named) == []


@pytest.mark.parametrize("command", ["run", "check", "loadgen", "demo", "report"])
def test_every_flag_the_command_table_shows_is_in_the_commands_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from jouled.cli import main

    section = README.read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    [cell] = [
        line.split("|")[1]
        for line in section.splitlines()
        if line.startswith(f"| `jouled {command}")
    ]
    flags = set(re.findall(r"--[a-z][a-z-]*", cell))
    assert flags, cell
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = capsys.readouterr().out
    assert sorted(f for f in flags if f not in shown) == []
