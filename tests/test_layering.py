"""The package's import graph follows the layer diagram of docs/architecture.md: no arrow points back up, no cycles.

Every ``import`` / ``from ... import`` of a ``cardiofusion`` module is read from the source (ast, so lazy imports inside
functions count too) and checked against :data:`LAYERS`.  A module may import its own package, the core modules and any
package of an earlier layer.  Separately, the module graph (all imports, lazy ones included) must be acyclic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cardiofusion

PACKAGE_DIR = Path(cardiofusion.__file__).resolve().parent

#: Layers in flow order; a package may import only from its own layer or an earlier one.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "records", "configfile", "_compat"),  # core
    ("io",),
    ("cohort",),
    ("transforms",),
    ("synth", "adapters"),  # data sources: the synthetic hospital export, public-data adapters
    ("cache",),
    ("data",),
    ("models",),
    ("tasks",),
    ("training",),
    ("evaluation",),
    ("explain",),
    ("bundle",),
    ("serve",),
    ("recipes",),
    ("commands", "cli"),
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}

#: The package root: ``cardiofusion.load`` is a lazy facade over :mod:`cardiofusion.bundle` (the public entry point),
#: so the root's own imports are exempt; importing the root from inside means only its core re-exports.
ROOT = "cardiofusion"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of the cardiofusion modules that ``module`` imports (at any depth of the file)."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            # ``from pkg import submodule`` imports the submodule (and pkg's __init__, unless pkg is our own package)
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            if subs:
                found.update(subs)
                if len(subs) < len(node.names) or not (module == target or module.startswith(target + ".")):
                    found.add(target)
            else:
                found.add(target)
    found.discard(module)
    return {m for m in found if m in MODULES}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    tops = {_top(m) for m in MODULES} - {None}
    assert tops <= set(LAYER_OF), f"packages without a layer in LAYERS: {sorted(tops - set(LAYER_OF))}"


def test_no_import_points_back_up():
    bad = []
    for module, targets in GRAPH.items():
        src = _top(module)
        if src is None:
            continue  # the root facade
        for target in targets:
            dst = _top(target)
            if dst is None or dst == src:
                continue  # the root (core re-exports) or the own package
            if LAYER_OF[dst] > LAYER_OF[src]:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports that point back up the layers:\n" + "\n".join(sorted(bad))


def test_same_layer_packages_do_not_import_each_other():
    bad = [f"{m} -> {t}" for m, ts in GRAPH.items() for t in ts
           if _top(m) and _top(t) and _top(m) != _top(t) and LAYER_OF[_top(m)] == LAYER_OF[_top(t)] and LAYER_OF[_top(m)] > 0]
    assert not bad, "\n".join(sorted(bad))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    graph = {m: ts for m, ts in GRAPH.items() if m != ROOT}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_catches_what_it_should():
    """The checks themselves: a cycle and an upward arrow in a made-up graph are found."""
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    assert LAYER_OF["io"] < LAYER_OF["cache"] < LAYER_OF["training"] < LAYER_OF["bundle"] < LAYER_OF["recipes"]


@pytest.mark.parametrize("module", ["cardiofusion.io.ecg", "cardiofusion.transforms.decode"])
def test_graph_sees_lazy_imports(module):
    """Imports inside functions are in the graph (the readers import their format modules lazily)."""
    assert module in MODULES and GRAPH[module]
