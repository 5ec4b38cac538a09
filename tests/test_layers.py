"""The import picture of docs/ARCHITECTURE.md ("Layers, as built"), checked on the source.

Every module of ``jouled/`` belongs to a layer; an import goes to the same layer or a lower
one, never up; and no module imports itself through others (no circle). Lazy imports inside
functions count; imports under ``if TYPE_CHECKING:`` (annotations only, never run) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "jouled"

# Lowest first. A package is named by its directory, a top-level module by its file name.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "base",
        frozenset(
            {
                "jouled",
                "clock",
                "logs",
                "regex",
                "units",
                "connections",
                "files",
                "httpget",
                "tls",
                "labels",
                "throttle",
                "threads",
                "native",
                "config",
            }
        ),
    ),
    ("readers", frozenset({"collectors", "costmodel", "testing"})),
    ("pipeline", frozenset({"pipeline"})),
    ("stages", frozenset({"attribution", "cost"})),
    ("edges", frozenset({"ingest", "exporter", "ledger", "ledger_schema"})),
    (
        "apps",
        frozenset(
            {
                "daemon",
                "cli",
                "__main__",
                "client",
                "loadgen",
                "demo",
                "demo_plot",
                "report",
                "report_plot",
                "report_carbon",
                "report_errors",
                "fleet",
            }
        ),
    ),
)

# Upward arrows allowed by name, each to a leaf table (a module importing nothing of ours):
# the config validates hardware and embodied-emission preset names against them.
ALLOWED_UP = {
    ("jouled.config", "jouled.costmodel.hardware"),
    ("jouled.config", "jouled.cost.embodied"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "jouled"


def layer_of(module: str) -> int:
    unit = unit_of(module)
    for index, (_name, units) in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"{module}: its unit {unit!r} is in no layer; add it to LAYERS and docs")


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports() -> dict[str, set[str]]:
    """module -> the jouled modules it imports (``from a import b`` counts ``a.b`` when b is
    a module, else ``a``)."""
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        me = module_name(path)
        found: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "jouled")
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != "jouled":
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        out[me] = {m for m in found if m != me}
    return out


GRAPH = imports()


def test_every_module_is_in_a_layer() -> None:
    for module in GRAPH:
        layer_of(module)
    # The reader sees real arrows, lazy ones included (else every check below passes empty).
    assert "jouled.pipeline.tick" in GRAPH["jouled.attribution.stage"]
    assert "jouled.collectors.rapl" in GRAPH["jouled.collectors.registry"]  # inside a function
    assert "jouled.demo" not in GRAPH["jouled.demo_plot"]  # only under TYPE_CHECKING


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in GRAPH.items()
        for b in targets
        if layer_of(b) > layer_of(a) and (a, b) not in ALLOWED_UP
    ]
    assert not upward, "\n".join(sorted(upward))


@pytest.mark.parametrize(("importer", "leaf"), sorted(ALLOWED_UP))
def test_the_allowed_upward_imports_reach_leaf_tables(importer: str, leaf: str) -> None:
    assert leaf in GRAPH[importer]
    assert GRAPH[leaf] == set(), f"{leaf} must import nothing of jouled to stay a leaf"


def test_no_import_circle() -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []
    circles: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not circles, "\n".join(circles)


def test_daemon_is_lifecycle_only_and_the_exporter_reads_the_pipeline() -> None:
    # Nothing imports the daemon but the command line; the exporter imports no stage.
    importers = {a for a, targets in GRAPH.items() for b in targets if unit_of(b) == "daemon"}
    assert {unit_of(a) for a in importers} <= {"cli", "daemon", "demo"}
    exporter = {b for a, t in GRAPH.items() if unit_of(a) == "exporter" for b in t}
    assert {unit_of(b) for b in exporter} <= {"jouled", "exporter", "pipeline", "threads"}
    # Predictions are the cost stage's: attribution reads no cost model.
    attribution = {b for a, t in GRAPH.items() if unit_of(a) == "attribution" for b in t}
    assert not {unit_of(b) for b in attribution} & {"cost", "costmodel"}


def test_modules_over_400_lines_say_why() -> None:
    silent = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Over 400 lines because" not in doc:
                silent.append(f"{path.relative_to(ROOT.parent)}: {text.count(chr(10))} lines")
    assert not silent, "split these or say why in the module docstring:\n" + "\n".join(silent)
