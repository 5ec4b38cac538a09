"""The fit file: a fitted energy model the daemon can load without numpy, pandas or scipy.

``joules = intercept + slope · gflops`` per request (the thesis's model anchors the intercept
at 0). ``models`` lists the predicted joules per request of each model the fit knows, so the
daemon can export prediction next to measurement and alert on drift. Pure ``json`` + ``math``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jouled.files import FileReadError, read_small_file

SCHEMA = "jouled.costmodel.fit/1"


class FitFileError(ValueError):
    """A fit file that cannot be used; ``str()`` names the file, the key and what to fix."""


@dataclass(frozen=True)
class ModelEntry:
    gflops: float
    joules_per_request: float


@dataclass(frozen=True)
class Fit:
    """A linear energy model in one predictor (GFLOPs per request)."""

    slope_joules_per_gflop: float
    intercept_joules: float = 0.0
    method: str = "anchored"
    predictor: str = "gflops"
    unit: str = "request"
    r2: float | None = None
    n: int | None = None
    # Efficiency (TFLOPs/J) of the hardware the energy was measured on, when known: lets a
    # prediction be moved to other hardware (thesis section 5.3).
    measured_on_tflops_per_joule: float | None = None
    models: Mapping[str, ModelEntry] = field(default_factory=lambda: MappingProxyType({}))

    def predict_joules(self, gflops: float) -> float:
        """Predicted joules for one request of ``gflops`` GFLOPs."""
        if not math.isfinite(gflops) or gflops < 0:
            raise ValueError(f"gflops must be a finite non-negative number, got {gflops!r}")
        return self.intercept_joules + self.slope_joules_per_gflop * gflops

    def joules_for_model(self, model: str) -> float | None:
        """Predicted joules per request of a model the fit file lists; None if not listed."""
        entry = self.models.get(model)
        return None if entry is None else entry.joules_per_request

    @property
    def predicted_joules_per_request(self) -> Mapping[str, float]:
        return MappingProxyType({k: v.joules_per_request for k, v in self.models.items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": self.method,
            "predictor": self.predictor,
            "unit": self.unit,
            "slope_joules_per_gflop": self.slope_joules_per_gflop,
            "intercept_joules": self.intercept_joules,
            "r2": self.r2,
            "n": self.n,
            "measured_on_tflops_per_joule": self.measured_on_tflops_per_joule,
            "models": {
                name: {"gflops": e.gflops, "joules_per_request": e.joules_per_request}
                for name, e in sorted(self.models.items())
            },
        }


def _number(data: Mapping[str, Any], key: str, origin: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FitFileError(f"{origin}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _required(data: Mapping[str, Any], key: str, origin: str) -> float:
    value = _number(data, key, origin)
    if value is None:
        raise FitFileError(f"{origin}: missing key {key!r}")
    return value


def parse_fit(data: object, origin: str = "fit file") -> Fit:
    """Validate a decoded fit file; ``origin`` names it in errors."""
    if not isinstance(data, Mapping):
        raise FitFileError(f"{origin}: expected a JSON object")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise FitFileError(
            f"{origin}: schema {schema!r} is not {SCHEMA!r}; write it with `jouled model fit --out`"
        )
    slope = _required(data, "slope_joules_per_gflop", origin)
    intercept = _number(data, "intercept_joules", origin) or 0.0
    measured_on = _number(data, "measured_on_tflops_per_joule", origin)
    if measured_on is not None and measured_on <= 0:
        raise FitFileError(f"{origin}: 'measured_on_tflops_per_joule' must be positive")
    r2 = _number(data, "r2", origin)
    n_raw = data.get("n")
    if n_raw is not None and (isinstance(n_raw, bool) or not isinstance(n_raw, int)):
        raise FitFileError(f"{origin}: 'n' must be an integer, got {n_raw!r}")
    raw_models = data.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise FitFileError(f"{origin}: 'models' must be an object of model name to entry")
    models: dict[str, ModelEntry] = {}
    for name, entry in raw_models.items():
        where = f"{origin}: models[{name!r}]"
        if not isinstance(entry, Mapping):
            raise FitFileError(f"{where} must be an object with gflops and joules_per_request")
        models[str(name)] = ModelEntry(
            gflops=_required(entry, "gflops", where),
            joules_per_request=_required(entry, "joules_per_request", where),
        )
    return Fit(
        slope_joules_per_gflop=slope,
        intercept_joules=intercept,
        method=str(data.get("method", "anchored")),
        predictor=str(data.get("predictor", "gflops")),
        unit=str(data.get("unit", "request")),
        r2=r2,
        n=n_raw,
        measured_on_tflops_per_joule=measured_on,
        models=MappingProxyType(models),
    )


# A fit file holds a few coefficients per model: 1 MiB is far past any real one (a FIFO or
# a huge file at the path is refused before it is read; a reload parses it on the loop).
MAX_FIT_FILE_BYTES = 1024 * 1024


def load_fit(path: Path | str) -> Fit:
    """Read and validate a fit file written by ``jouled model fit --out``."""
    p = Path(path)
    try:
        data = json.loads(read_small_file(p, MAX_FIT_FILE_BYTES, "fit file").decode("utf-8"))
    except FileReadError as err:
        if not p.exists():
            raise FitFileError(f"{p}: no such fit file") from None
        raise FitFileError(str(err)) from None
    except UnicodeDecodeError as err:
        raise FitFileError(f"{p}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise FitFileError(f"{p}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (RecursionError, ValueError) as err:  # deep nesting, an int of 4,300+ digits
        raise FitFileError(f"{p}: not valid JSON ({err})") from None
    return parse_fit(data, str(p))


def write_fit(fit: Fit, path: Path | str) -> None:
    Path(path).write_text(json.dumps(fit.to_dict(), indent=2) + "\n", encoding="utf-8")
