"""The layers of ``docs/ARCHITECTURE.md``, checked on the source: no module imports from a
layer above its own, the package has no import cycles, and no file grows past ~600 lines
without saying why at its top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "customerkey"

# Lower numbers are lower layers; a module may import its own layer and those below.
LAYERS = {
    "errors": 0, "clock": 0, "rng": 0, "config": 0, "actor": 0, "home": 0,
    "crypto": 1, "storage": 1, "azure": 1,
    "vault": 2, "keyprovider": 2, "identity": 2, "audit": 2, "hsm": 2,
    "keys": 3, "jobs": 3,
    "workloads": 4,
    "views": 5,
    "runtime": 6,
    "api": 7, "server": 7, "pwsh": 7, "console": 7,
    "cli": 8, "demo": 8, "__main__": 8,
}  # fmt: skip
LONG_FILE = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(("customerkey", *parts)).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: list[tuple[int, str]] = []
    for node in nodes:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("customerkey")
        ):
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend(
                (node.lineno, a.name) for a in node.names if a.name.startswith("customerkey")
            )
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_top_level_package_has_a_layer() -> None:
    tops = {name.split(".")[1] for name in _modules() if name.count(".") >= 1}
    assert tops <= set(LAYERS), sorted(tops - set(LAYERS))


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        own = _layer(name)
        for line, target in _imports(path, top_level_only=False):
            theirs = _layer(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert upward == []


def test_there_are_no_import_cycles() -> None:
    modules = _modules()
    graph = {
        name: {t for _, t in _imports(path, top_level_only=True) if t in modules and t != name}
        for name, path in modules.items()
    }
    visiting: set[str] = set()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append([*trail[trail.index(node) :], node])
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_a_long_file_says_why_at_its_top(path: Path) -> None:
    text = path.read_text()
    if text.count("\n") <= LONG_FILE:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "Length:" in docstring, f"{path.relative_to(SRC)} is long and does not say why"
