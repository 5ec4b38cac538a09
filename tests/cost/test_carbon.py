"""The carbon books' arithmetic by hand: market-based Scope 2, provenance, embodied, water,
local hours across a DST change."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from jouled import config
from jouled.cost import embodied
from jouled.cost.carbon import (
    BASIS_LOCATION,
    BASIS_RESIDUAL,
    BASIS_SUPPLIER,
    MarketBased,
    Provenance,
    hour_of,
    local_hour,
    provenance,
    water_litres,
)

Y2025 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()
Y2026 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()


def market(**kw: object) -> MarketBased:
    return MarketBased(config.MarketBasedConfig.model_validate(kw))


# 8.76 MWh over 2025 (365 days = 31 536 000 s) is 8760 kWh / 8760 h = 1 kW, evenly.
GO_2025 = {"name": "go-wind", "mwh": 8.76, "start": "2025-01-01", "end": "2026-01-01"}


def test_certificate_covers_its_rate_and_the_residual_mix_takes_the_rest() -> None:
    m = market(instruments=[GO_2025], residual_mix=540)
    # One hour in 2025, 2 kWh of facility energy: 1 kWh covered at 0 g/kWh, 1 kWh at 540.
    s = m.split(2.0, Y2025 + 7200, 3600, location_g_per_kwh=300)
    assert s.covered_kwh == {"go-wind": pytest.approx(1.0)}
    assert s.rest_kwh == pytest.approx(1.0)
    assert s.grams == pytest.approx(540.0)
    assert s.basis == BASIS_RESIDUAL
    assert s.g_per_kwh == pytest.approx(270.0)  # 540 g / 2 kWh


def test_an_hour_under_the_rate_is_fully_covered_and_unused_coverage_is_not_banked() -> None:
    m = market(instruments=[GO_2025], residual_mix=540)
    # 0.5 kWh in an hour: all covered (0 g); the other 0.5 kWh of allowance is not kept.
    assert m.split(0.5, Y2025 + 3600, 3600, 300).grams == 0.0
    assert m.split(2.0, Y2025 + 7200, 3600, 300).grams == pytest.approx(540.0)


def test_supplier_factor_before_residual_mix_before_location() -> None:
    both = market(supplier_factor=120, residual_mix=540)
    s = both.split(2.0, Y2025 + 3600, 3600, 300)
    assert (s.grams, s.basis) == (240.0, BASIS_SUPPLIER)  # 2 kWh x 120
    s = market(residual_mix=540).split(2.0, Y2025 + 3600, 3600, 300)
    assert (s.grams, s.basis) == (1080.0, BASIS_RESIDUAL)  # 2 kWh x 540
    s = market().split(2.0, Y2025 + 3600, 3600, 300)
    assert (s.grams, s.basis) == (600.0, BASIS_LOCATION)  # 2 kWh x 300, flagged


def test_instrument_period_bounds_and_order() -> None:
    ppa = {"name": "ppa", "mwh": 8.76, "start": "2025-01-01", "end": "2026-01-01", "factor": 20}
    m = market(instruments=[ppa, {**GO_2025, "name": "go"}], residual_mix=500)
    # A tick straddling the end of 2025: half an hour inside each instrument's period.
    s = m.split(3.0, Y2026 + 1800, 3600, 300)
    # ppa covers 0.5 kWh at 20 g, go 0.5 kWh at 0 g, 2 kWh at 500: 10 + 0 + 1000 g.
    assert s.covered_kwh == {"ppa": pytest.approx(0.5), "go": pytest.approx(0.5)}
    assert s.grams == pytest.approx(1010.0)
    # After the period nothing is covered.
    assert market(instruments=[GO_2025]).split(1.0, Y2026 + 7200, 3600, 300).covered_kwh == {}


def test_instrument_end_before_start_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="end must be after start"):
        config.validate(
            {"cost": {"market_based": {"instruments": [{**GO_2025, "end": "2024-01-01"}]}}}, "t"
        )


def test_provenance_of_each_source() -> None:
    def prov(gi: object) -> Provenance:
        return provenance(config.validate({"cost": {"grid_intensity": gi}}, "t").cost)

    assert prov(475) == Provenance("configured", "", "unstated", "unstated")
    stated = {"value": 380, "factor_type": "average", "boundary": "operational", "zone": "DE"}
    assert prov({**stated, "source": "UBA 2024"}) == Provenance(
        "UBA 2024", "DE", "average", "operational"
    )
    em = {"provider": "electricitymaps", "zone": "DE", "token_file": "/t"}
    assert prov(em) == Provenance("electricitymaps", "DE", "average", "lifecycle")
    assert prov({**em, "boundary": "operational"}).boundary == "operational"
    assert prov({"provider": "uk_national_grid"}) == Provenance(
        "uk_national_grid", "GB", "average", "operational"
    )
    wt = {"provider": "watttime", "zone": "CAISO_NORTH", "token_file": "/t"}
    assert prov(wt) == Provenance("watttime", "CAISO_NORTH", "marginal", "operational")


def test_embodied_preset_and_amortization_by_hand() -> None:
    r740 = embodied.preset("Dell-PowerEdge-R740")
    assert r740 is not None
    # Dell's PCF: 8640 kgCO2e over the life, 15.2 % manufacturing: 1313.28 kgCO2e.
    assert r740.embodied_kgco2e == pytest.approx(1313.28)
    # Over 4 years = 4 x 365.25 x 24 = 35064 h: 1 313 280 g / 35064 h = 37.4538... g/h.
    assert embodied.amortized_g(1313.28, 4.0, 3600.0) == pytest.approx(1313280 / 35064)
    assert embodied.amortized_g(1313.28, 4.0, 3600.0) == pytest.approx(37.45380, rel=1e-6)
    # A whole lifetime charges exactly the embodied total.
    assert embodied.amortized_g(100.0, 2.0, 2 * embodied.SECONDS_PER_YEAR) == pytest.approx(1e5)


def test_embodied_without_lifetime_needs_one_and_embodied_alone_needs_no_price() -> None:
    with pytest.raises(config.ConfigError, match="lifetime_years"):
        config.validate({"cost": {"hardware": [{"name": "gpu-box", "embodied_kgco2e": 2500}]}}, "t")
    cfg = config.validate(
        {"cost": {"hardware": [{"name": "gpu-box", "embodied_kgco2e": 2500, "lifetime_years": 5}]}},
        "t",
    )
    assert cfg.cost.hardware[0].per_hour is None
    # A preset with embodied emissions needs neither price nor lifetime.
    config.validate({"cost": {"hardware": [{"name": "hpe-proliant-dl380-gen10"}]}}, "t")


def test_water_on_site_per_it_kwh_and_off_site_per_facility_kwh() -> None:
    # 1 kWh of IT energy: on site 1 x 0.5 L; off site 1 x 1.2 (PUE) x 3.1 L = 3.72 L.
    on, off = water_litres(3.6e6, pue=1.2, wue=0.5, grid_l_per_kwh=3.1)
    assert on == pytest.approx(0.5)
    assert off == pytest.approx(3.72)


def test_hourly_profiles_follow_local_time_across_dst() -> None:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    profile = tuple(float(h) for h in range(24))
    # 2025-03-30 01:00 UTC: Berlin jumps from 02:00 CET to 03:00 CEST (hour 2 never happens).
    spring = dt.datetime(2025, 3, 30, 1, 0, tzinfo=dt.UTC).timestamp()
    assert local_hour(spring - 1, berlin) == 1  # 01:59:59 CET
    assert hour_of(profile, spring, berlin) == 3.0  # 03:00:00 CEST
    # 2025-10-26 01:00 UTC: 03:00 CEST falls back to 02:00 CET (hour 2 happens twice).
    autumn = dt.datetime(2025, 10, 26, 1, 0, tzinfo=dt.UTC).timestamp()
    assert local_hour(autumn - 1800, berlin) == 2  # 02:30 CEST
    assert local_hour(autumn + 1800, berlin) == 2  # 02:30 CET
    assert local_hour(autumn + 3600, berlin) == 3
    assert hour_of(profile, spring, zoneinfo.ZoneInfo("UTC")) == 1.0


def test_unknown_timezone_is_refused_with_the_fix() -> None:
    with pytest.raises(config.ConfigError, match="IANA name such as Europe/Berlin"):
        config.validate({"cost": {"timezone": "Mars/Olympus"}}, "t")
