"""The `cost` and `ledger` config keys: defaults, shapes, and errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled import config
from jouled.config import ConfigError, GridProviderConfig


def load(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "j.yaml"
    p.write_text(text)
    return config.load(p)


def test_defaults() -> None:
    cfg = config.DEFAULT_CONFIG
    assert cfg.ledger.path == Path("/var/lib/jouled/ledger.db")
    assert cfg.ledger.flush_interval == 10.0
    assert cfg.cost.hardware == ()


def test_the_design_block_loads(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "cost:\n  window: 60\n  pue: 1.58\n  grid_intensity: 475\n"
        "  energy_price: {per_kwh: 0.20, currency: USD}\n"
        "  hardware: [{name: A100, per_hour: 3.3741}]\n"
        "ledger:\n  path: /tmp/x.db\n",
    )
    assert cfg.cost.hardware[0].per_hour == 3.3741
    assert cfg.ledger.path == Path("/tmp/x.db")


@pytest.mark.parametrize("value", ["''", "null"])
def test_empty_or_null_ledger_path_disables(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, f"ledger: {{path: {value}}}\n").ledger.path is None


def test_provider_block_and_hourly_profile(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "cost:\n  grid_intensity:\n    provider: electricitymaps\n    zone: DE\n"
        "    token_file: /etc/jouled/emaps.token\n    interval: 600\n",
    )
    gi = cfg.cost.grid_intensity
    assert isinstance(gi, GridProviderConfig) and gi.interval == 600 and gi.fallback == 475
    profile = load(tmp_path, f"cost: {{grid_intensity: {list(range(24))}}}\n")
    assert profile.cost.grid_intensity == tuple(float(h) for h in range(24))
    # A reload re-validates a dumped config: the union survives the round trip.
    assert cfg.with_overrides(listen=None) == cfg


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ("cost: {pue: 0.9}\n", "cost.pue", "greater than or equal to 1"),
        ("cost: {grid_intensity: [1, 2]}\n", "cost.grid_intensity", "exactly 24 values"),
        ("cost: {grid_intensity: lots}\n", "cost.grid_intensity", "provider block"),
        (
            "cost: {grid_intensity: {provider: electricitymaps, token_file: /t}}\n",
            "cost.grid_intensity",
            "needs zone",
        ),
        (
            "cost: {grid_intensity: {provider: watttime, zone: CAISO_NORTH}}\n",
            "cost.grid_intensity",
            "needs token_file",
        ),
        (
            "cost: {grid_intensity: {provider: uk_national_grid, tokn: 1}}\n",
            "cost.grid_intensity",
            "tokn: unknown key",
        ),
        ("cost: {hardware: [{name: H100}]}\n", "cost.hardware", "needs per_hour"),
        (
            "cost: {energy_price: {currency: EUR}, hardware: [{name: A100}]}\n",
            "cost.hardware",
            "give per_hour in EUR",
        ),
        ("cost: {energy_price: {currency: usd}}\n", "cost.energy_price.currency", "pattern"),
        ("cost: {energy_price: {per_kwh: -1}}\n", "cost.energy_price.per_kwh", "from 0 to"),
        ("ledger: {flush_interval: 0}\n", "ledger.flush_interval", "greater than or equal"),
        ("ledger: {pth: x}\n", "ledger.pth", "unknown key"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    msg = str(err.value)
    assert f"key '{key}'" in msg and hint in msg, msg


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        # Accepted before: every cost series NaN or +Inf for good.
        ("energy_price: {per_kwh: .nan}", "per_kwh must be a number from 0 to 1e"),
        ("energy_price: {per_kwh: .inf}", "per_kwh must be a number from 0 to 1e"),
        ("energy_price: {per_kwh: [" + ", ".join(["0.1"] * 23 + [".nan"]) + "]}", "per_kwh"),
        ("hardware: [{name: gpu, per_hour: .inf}]", "less than or equal to 1000000000"),
        # 1e-300 years: embodied grams per second past any float, +Inf for good.
        (
            "hardware: [{name: gpu, embodied_kgco2e: 1000, lifetime_years: 1e-300}]",
            "greater than or equal to 0.01",
        ),
        # An OSError (file name too long) escaped the validator: a traceback, no key named.
        ("timezone: " + "A" * 5000, "unknown time zone 'AAAA"),
        # Refused already (kept as the list of absurd inputs).
        ("wue: .nan", "cost.wue"),
        (
            "market_based: {instruments: [{name: a, mwh: -1, start: 2025-01-01, end: 2025-02-01}]}",
            "greater than 0",
        ),
    ],
)
def test_absurd_cost_numbers_are_refused_naming_the_key(
    tmp_path: Path, cost: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load(tmp_path, f"cost:\n  {cost}\n")
    assert len(str(err.value)) < 300  # the 5,000-character zone name is not echoed whole
