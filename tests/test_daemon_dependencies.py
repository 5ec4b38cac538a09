"""``make run`` installs pyproject's ``dependencies`` only: every library jouled imports
(top level or lazily, found in the source) must come with them, except the offline half's
extras (numpy, pandas, scipy, matplotlib), imported only by the offline modules that turn
their absence into a one-line ``pip install 'jouled[...]'``. The slow fresh-clone test runs
the daemon in exactly that virtualenv; this finds a missing dependency in a second."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFLINE_EXTRAS = {"numpy", "pandas", "scipy", "matplotlib"}
OFFLINE_MODULES = {
    "jouled/costmodel/fit.py",
    "jouled/costmodel/validate.py",
    "jouled/costmodel/plots.py",
    "jouled/report_plot.py",
    "jouled/demo_plot.py",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s;\[<>=!~(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, with their own (no extras)."""
    seen: set[str] = set()
    todo = [_name(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:  # a marker left it out here (python_version < ...)
            continue
        for req in requires:
            if "extra ==" not in req:
                todo.append(_name(req))
    return seen


def imports() -> set[tuple[str, str]]:
    found = set()
    for path in (REPO / "jouled").rglob("*.py"):
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {(a.name.split(".")[0], rel) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add((node.module.split(".")[0], rel))
    return {
        (n, p)
        for n, p in found
        if n not in sys.stdlib_module_names and n not in ("jouled", "__future__")
    }


def test_the_daemons_dependencies_cover_what_jouled_imports() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    installed = closure(deps)
    providers = md.packages_distributions()
    missing = []
    for name, path in sorted(imports()):
        if name in OFFLINE_EXTRAS:
            assert path in OFFLINE_MODULES, f"{path} imports {name}, an offline extra"
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(name, [])}
        if not dists & installed:
            missing.append(f"{name} (imported by {path}; from {sorted(dists) or '?'})")
    assert missing == [], "add to pyproject's dependencies: " + "; ".join(missing)
