"""The thesis's measured tables and public model configs, packaged with jouled.

``thesis:inference`` (Table 4.3 with BERT-large from Table 5.2), ``thesis:finetune``
(Table 4.1, per training step), ``thesis:coldstart`` (Table 4.2) name packaged CSVs; configs
are public Hugging Face ``config.json`` files (the thesis's encoders and common decoder and
mixture-of-experts LLMs), each naming its repository in ``_name_or_path``.
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
    """A config.json path, or the name of a packaged config (e.g. ``bert-base-uncased``).

    A Hugging Face id (``org/name``) that is not a file resolves to the packaged config of
    that name when there is one; otherwise FileNotFoundError lists the packaged configs.
    """
    path = Path(spec)
    if path.exists():
        return path
    packaged = data_dir() / "configs" / f"{path.name}.json"
    if path.suffix != ".json" and packaged.exists():
        return packaged
    if path.suffix == ".json":
        what = f"{spec}: no such file"
    elif "/" in spec:  # a Hugging Face id: jouled downloads nothing
        what = f"{spec}: no such file or packaged config (save the model's config.json and "
        what += "give its path)"
    else:
        what = f"{spec!r} is neither a file nor a packaged config"
    raise FileNotFoundError(f"{what}; packaged: {', '.join(config_names())}")


def published() -> dict[str, Any]:
    """The thesis's printed results (Tables 5.1-5.3, section 5.3 coefficients)."""
    data: dict[str, Any] = json.loads(
        (data_dir() / "thesis_published.json").read_text(encoding="utf-8")
    )
    return data


def ledger_csv(ledger: Path, *, since_days: float | None = None) -> Path:
    """A measurements CSV (``model,gflops,joules,requests``) from jouled's ledger: per
    (workload, model) with known work, GFLOPs per request and the energy of its requests.

    Written to a temporary file that ``fit`` reads like any other CSV.
    """
    import csv
    import sqlite3
    import tempfile
    import time

    if not ledger.exists():
        raise FileNotFoundError(f"{ledger}: no such ledger (ledger.path of the daemon)")
    since = 0 if since_days is None else int(time.time() - since_days * 86400)
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT workload, model, SUM(requests), SUM(gflops), SUM(energy_j) "
                "FROM minutes WHERE scope = 'model' AND minute >= ? "
                "GROUP BY workload, model HAVING SUM(requests) > 0 AND SUM(gflops) > 0 "
                "ORDER BY workload, model",
                (since,),
            ).fetchall()
    except sqlite3.Error as exc:
        raise FileNotFoundError(f"{ledger}: not a readable jouled ledger ({exc})") from None
    if not rows:
        raise FileNotFoundError(
            f"{ledger}: no requests with known GFLOPs in the ledger"
            + (f" over the last {since_days:g} days" if since_days else "")
            + " (spans need jouled.gflops, or tokens and spans.gflops_per_token)"
        )
    with tempfile.NamedTemporaryFile(
        "w", suffix=".csv", prefix="jouled-ledger-", delete=False, newline=""
    ) as fh:
        out = csv.writer(fh)
        out.writerow(["model", "workload", "gflops", "joules", "requests"])
        for workload, model, requests, gflops, energy in rows:
            # joules is the total: fit divides it by the requests column (thesis Eq. 5.1).
            out.writerow([model, workload, gflops / requests, energy, requests])
    return Path(fh.name)
