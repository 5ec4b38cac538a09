"""The thesis's measured tables and public model configs, packaged with jouled.

``thesis:inference`` (Table 4.3 with BERT-large from Table 5.2), ``thesis:finetune``
(Table 4.1, per training step), ``thesis:coldstart`` (Table 4.2) name packaged CSVs; configs
are the public Hugging Face ``config.json`` of the thesis's models plus GPT-2 and TinyLlama.
Stdlib only; no network access at run time.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

THESIS_TABLES = ("inference", "finetune", "coldstart")
THESIS_PREFIX = "thesis:"


def data_dir() -> Path:
    return Path(str(resources.files("jouled.costmodel") / "data"))


def config_names() -> list[str]:
    return sorted(p.stem for p in (data_dir() / "configs").glob("*.json"))


def resolve_csv(spec: str) -> Path:
    """``thesis:NAME`` to a packaged CSV; anything else is a path, returned as is."""
    if spec.startswith(THESIS_PREFIX):
        name = spec.removeprefix(THESIS_PREFIX)
        if name not in THESIS_TABLES:
            raise FileNotFoundError(
                f"no packaged table {spec!r}; choose one of "
                + ", ".join(THESIS_PREFIX + t for t in THESIS_TABLES)
            )
        return data_dir() / f"thesis_{name}.csv"
    return Path(spec)


def resolve_config(spec: str) -> Path:
    """A config.json path, or the name of a packaged config (e.g. ``bert-base-uncased``)."""
    path = Path(spec)
    if path.exists() or path.suffix == ".json" or "/" in spec:
        return path
    packaged = data_dir() / "configs" / f"{spec}.json"
    if packaged.exists():
        return packaged
    raise FileNotFoundError(
        f"{spec!r} is neither a file nor a packaged config; packaged: {', '.join(config_names())}"
    )


def published() -> dict[str, Any]:
    """The thesis's printed results (Tables 5.1-5.3, section 5.3 coefficients)."""
    data: dict[str, Any] = json.loads(
        (data_dir() / "thesis_published.json").read_text(encoding="utf-8")
    )
    return data
