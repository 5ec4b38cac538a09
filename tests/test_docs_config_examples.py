"""Every jouled config example in README.md, docs/ and examples/ loads with the daemon's own
loader (copy-pasted into a file, as a user would), and README's block, which presents the
embedded defaults, is the defaults (its workloads are examples)."""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from jouled import config

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "examples").rglob("*.md")]
)


def yaml_blocks() -> list[tuple[str, str]]:
    """(file:line, text) of each ```yaml block that is a jouled config (a top-level key of
    Config); Kubernetes or Prometheus YAML would have none."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"```ya?ml\n(.*?)```", text, flags=re.S):
            data = yaml.safe_load(m.group(1))
            if isinstance(data, dict) and set(data) & set(config.Config.model_fields):
                line = text.count("\n", 0, m.start()) + 2
                found.append((f"{page.relative_to(REPO)}:{line}", m.group(1)))
    return found


BLOCKS = yaml_blocks()


def test_the_pages_have_config_examples() -> None:
    where = [w.split(":")[0] for w, _ in BLOCKS]
    assert len(BLOCKS) >= 11
    for page in ("README.md", "docs/COST.md", "docs/TOKENS.md", "docs/SPANS.md"):
        assert page in where


@pytest.mark.parametrize(("where", "text"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_each_config_example_loads(where: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(text)
    config.load(path)  # raises ConfigError naming the key and line


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, BaseModel):
        return [
            d
            for k in type(a).model_fields
            for d in differences(getattr(a, k), getattr(b, k), f"{path}.{k}")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-3) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_readme_block_is_the_embedded_defaults() -> None:
    [(where, text)] = [(w, t) for w, t in BLOCKS if w.startswith("README.md")]
    shown = config.validate(yaml.safe_load(text), where, text)
    defaults = config.Config()
    assert [w.name for w in shown.workloads] == ["classifier", "chat"]
    shown = shown.model_copy(update={"workloads": defaults.workloads})
    # ledger.path: the README shows root's default; another user's is under ~/.local/state.
    assert shown.ledger.path == Path("/var/lib/jouled/ledger.db")
    shown = shown.model_copy(
        update={"ledger": shown.ledger.model_copy(update={"path": defaults.ledger.path})}
    )
    assert differences(shown, defaults) == []


def _field_model(model: type[BaseModel], name: str) -> type[BaseModel] | bool | None:
    """The sub-model behind ``model.name`` (None: a leaf or a mapping), False: no such key."""
    field = model.model_fields.get(name)
    if field is None:
        return False
    pending: list[Any] = [field.annotation]
    while pending:
        t = pending.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        pending.extend(typing.get_args(t))
    return None


def test_every_config_key_the_pages_name_exists() -> None:
    """`collectors.rapl.max_power_watts`, `workloads[].server_metrics`, ... in the prose are
    keys the loader accepts (a renamed key would leave the docs pointing at nothing)."""
    tops = "|".join(config.Config.model_fields)
    pattern = re.compile(rf"`((?:{tops})(?:\[\])?(?:\.[a-z_]+(?:\[\])?)+)(?:[:=][^`]*)?`")
    checked, unknown = 0, []
    for page in PAGES:
        text = page.read_text()
        for m in pattern.finditer(text):
            if m.group(1).endswith(".py"):
                continue  # a file name (`cost.py`), not a key
            model: type[BaseModel] | None = config.Config
            for part in m.group(1).replace("[]", "").split("."):
                if model is None:
                    break  # below a mapping (`spans.gflops_per_token.<model>`)
                found = _field_model(model, part)
                if found is False:
                    line = text.count("\n", 0, m.start()) + 1
                    unknown.append(f"{page.relative_to(REPO)}:{line} {m.group(1)}")
                    break
                model = found if isinstance(found, type) else None
            checked += 1
    assert checked > 50
    assert unknown == []
