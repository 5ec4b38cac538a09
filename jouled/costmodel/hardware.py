"""Hardware presets: hourly price and efficiency (FLOPs per joule) of accelerators.

Efficiency e = peak FLOPS / TDP watts = FLOPs per joule (thesis Eq. 2.2); energy of a job is
FLOPs / e at best (Eq. 2.3). Values are the thesis's Tables 2.1 and 2.2 (Google Vertex AI,
Europe, 2022) plus the two processors it measured on (section 5.3). Stdlib only: the daemon's
live cost engine imports these presets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Precision = Literal["fp8", "fp16", "fp32", "fp64"]
PRECISIONS: tuple[Precision, ...] = ("fp8", "fp16", "fp32", "fp64")

TERA = 1e12


class HardwareError(ValueError):
    """An unknown preset or an unusable user entry; ``str()`` says what to fix."""


@dataclass(frozen=True)
class HardwarePreset:
    """One processor: price per hour (USD, None where the thesis gives none) and efficiency.

    Efficiencies are in TFLOPs per joule (= TFLOPS per watt) per precision; None where the
    precision is not applicable or not published.
    """

    name: str
    price_per_hour_usd: float | None
    tflops_per_joule_fp32: float | None
    tflops_per_joule_fp16: float | None = None
    tflops_per_joule_fp8: float | None = None
    tflops_per_joule_fp64: float | None = None
    source: str = ""

    def tflops_per_joule(self, precision: Precision = "fp32") -> float:
        """Efficiency at ``precision``; raises HardwareError when it is not known."""
        value: float | None = getattr(self, f"tflops_per_joule_{precision}", None)
        if value is None:
            known = [p for p in PRECISIONS if getattr(self, f"tflops_per_joule_{p}") is not None]
            raise HardwareError(
                f"{self.name} has no {precision} efficiency; known: {', '.join(known) or 'none'}"
                " (give --efficiency TFLOPS_PER_JOULE)"
            )
        return value

    def flops_per_joule(self, precision: Precision = "fp32") -> float:
        return self.tflops_per_joule(precision) * TERA


_PRESETS: dict[str, HardwarePreset] = {
    # Table 2.1 (A100, H100 per precision) and Table 2.2 (price per hour). Table 2.2 lists the
    # A100 at 0.89, which is its FP16 value in Table 2.1; the FP32 column keeps Table 2.1's 0.46.
    "A100": HardwarePreset("A100", 3.3741, 0.46, 0.89, None, 0.06, source="thesis Tables 2.1, 2.2"),
    # The thesis gives no H100 price (not released in 2022): supply one with --price-per-hour.
    "H100": HardwarePreset("H100", None, 0.71, 1.43, 2.86, 0.09, source="thesis Table 2.1"),
    "T4": HardwarePreset("T4", 0.4025, 0.12, source="thesis Table 2.2"),
    "P4": HardwarePreset("P4", 0.7475, 0.08, source="thesis Table 2.2"),
    "V100": HardwarePreset("V100", 2.9325, 0.06, source="thesis Table 2.2"),
    "P100": HardwarePreset("P100", 1.8400, 0.04, source="thesis Table 2.2"),
    "K80": HardwarePreset("K80", 0.5635, 0.03, source="thesis Table 2.2"),
    # The measurement host of the thesis (section 5.3): e_cpu = 8.82e9 and e_gpu = 24.77e9
    # FLOPs/J. Its coefficients are relative to these; predictions rescale by e_measured / e.
    "thesis-cpu": HardwarePreset(
        "thesis-cpu", None, 8.82e9 / TERA, source="thesis section 5.3: Intel i7-7920HQ"
    ),
    "thesis-gpu": HardwarePreset(
        "thesis-gpu", None, 24.77e9 / TERA, source="thesis section 5.3: AMD Radeon Pro 560"
    ),
}

PRESETS: Mapping[str, HardwarePreset] = MappingProxyType(_PRESETS)


def lookup(name: str, user: Mapping[str, HardwarePreset] | None = None) -> HardwarePreset:
    """A preset by name (case-insensitive); ``user`` entries take precedence over built-ins."""
    merged = {**PRESETS, **(user or {})}
    for key, preset in merged.items():
        if key.lower() == name.lower():
            return preset
    raise HardwareError(
        f"unknown hardware {name!r}; presets: {', '.join(merged)} "
        "(or give --efficiency TFLOPS_PER_JOULE and --price-per-hour)"
    )


def from_dict(entry: Mapping[str, object]) -> HardwarePreset:
    """A user entry such as ``{name: L4, per_hour: 0.7, tflops_per_joule_fp32: 0.17}``."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise HardwareError("hardware entry needs a non-empty 'name'")
    numbers: dict[str, float | None] = {}
    for key in ("per_hour", "price_per_hour_usd", *(f"tflops_per_joule_{p}" for p in PRECISIONS)):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise HardwareError(
                f"hardware {name!r}: {key} must be a positive number, got {value!r}"
            )
        numbers[key] = float(value)
    unknown = set(entry) - {"name", "source", *numbers, "per_hour", "price_per_hour_usd"}
    unknown -= {f"tflops_per_joule_{p}" for p in PRECISIONS}
    if unknown:
        raise HardwareError(f"hardware {name!r}: unknown keys {sorted(unknown)}")
    price = numbers.get("price_per_hour_usd", numbers.get("per_hour"))
    return HardwarePreset(
        name=name,
        price_per_hour_usd=price,
        tflops_per_joule_fp32=numbers.get("tflops_per_joule_fp32"),
        tflops_per_joule_fp16=numbers.get("tflops_per_joule_fp16"),
        tflops_per_joule_fp8=numbers.get("tflops_per_joule_fp8"),
        tflops_per_joule_fp64=numbers.get("tflops_per_joule_fp64"),
        source=str(entry.get("source", "user entry")),
    )
