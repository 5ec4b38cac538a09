"""Embodied (manufacturing) emissions of hardware, amortized over its lifetime.

GHG Protocol Scope 3 category 2 (capital goods) books a server's cradle-to-gate emissions
when it is bought; for a per-request or per-workload view jouled spreads them linearly over
the hardware's lifetime, as Cloud Carbon Footprint and EcoLogits do:
``g per second = kgCO2e x 1000 / (lifetime_years x 365.25 x 86400)``.

Presets are the *manufacturing* share of vendors' product carbon footprints (PCF): the PCF
total times its manufacturing ratio, as compiled in Boavizta's environmental-footprint-data
(``boavizta-data-us.csv``, commit 61323eb5, 2023-02-23), each row citing the vendor's PCF
document. The lifetime is the one the PCF assumes (4 years). Vendors' PCFs (mostly MIT's
PAIA method) carry wide error bars; Boavizta itself warns against using them for precise
comparisons. No GPU preset: NVIDIA's HGX H100/B200 PCF summaries could not be verified here,
so give ``embodied_kgco2e`` yourself for accelerators (docs/COST.md). Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

SECONDS_PER_YEAR: Final = 365.25 * 86400.0
BOAVIZTA: Final = "Boavizta environmental-footprint-data boavizta-data-us.csv @61323eb5"


@dataclass(frozen=True, slots=True)
class EmbodiedPreset:
    """One product: PCF total (kgCO2e over its life), manufacturing share, lifetime."""

    name: str
    pcf_total_kgco2e: float
    manufacturing_ratio: float
    lifetime_years: float
    document: str  # the vendor's PCF, as cited by Boavizta

    @property
    def embodied_kgco2e(self) -> float:
        return self.pcf_total_kgco2e * self.manufacturing_ratio


_DELL = "https://i.dell.com/sites/csdocuments/CorpComm_Docs/en/carbon-footprint-"
_PRESETS: dict[str, EmbodiedPreset] = {
    p.name: p
    for p in (
        # Dell PCF "PowerEdge R740", January 2019: 8640 kgCO2e, manufacturing 15.2 %.
        EmbodiedPreset("dell-poweredge-r740", 8640.0, 0.152, 4.0, _DELL + "poweredge-r740.pdf"),
        # Dell PCF "PowerEdge R640", January 2019: 7730 kgCO2e, manufacturing 16.6 %.
        EmbodiedPreset("dell-poweredge-r640", 7730.0, 0.166, 4.0, _DELL + "poweredge-r640.pdf"),
        # Dell PCF "PowerEdge C4140" (4 GPU slots), February 2019: 6800 kgCO2e, 18.3 %.
        EmbodiedPreset("dell-poweredge-c4140", 6800.0, 0.183, 4.0, _DELL + "poweredge-c4140.pdf"),
        # Dell PCF "PowerEdge R7515", January 2021: 8990 kgCO2e, manufacturing 9 %.
        EmbodiedPreset(
            "dell-poweredge-r7515",
            8990.0,
            0.09,
            4.0,
            "https://corporate.delltechnologies.com/asset/en-gb/products/servers/"
            "technical-support/poweredge-r7515.pdf",
        ),
        # HPE PCF data sheet "HPE ProLiant DL380 Gen10 server" (a50004545enw), 2021:
        # 4780 kgCO2e, manufacturing 10.4 %.
        EmbodiedPreset(
            "hpe-proliant-dl380-gen10",
            4780.0,
            0.104,
            4.0,
            "https://www.hpe.com/psnow/doc/a50004545enw",
        ),
    )
}

PRESETS: Mapping[str, EmbodiedPreset] = MappingProxyType(_PRESETS)


def preset(name: str) -> EmbodiedPreset | None:
    """The preset of that name (case-insensitive), or None."""
    return next((p for n, p in PRESETS.items() if n.lower() == name.lower()), None)


def amortized_g(embodied_kgco2e: float, lifetime_years: float, seconds: float) -> float:
    """Grams of embodied CO2e charged to ``seconds`` of a unit's life (linear, no salvage).

    1313.28 kgCO2e over 4 years is 1313280 g / 126230400 s = 0.0104039... g/s (37.45 g/h).
    """
    if lifetime_years <= 0:
        return 0.0
    return embodied_kgco2e * 1000.0 * seconds / (lifetime_years * SECONDS_PER_YEAR)
