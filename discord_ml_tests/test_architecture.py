"""The package's shape holds: imports only run down the layers (README, "Architecture"), at most three
modules sit loose at the top, and no module outgrows 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "discord_ml"
# Lowest first: a module may import its own layer and the layers before it, never one after it.
LAYERS = [
    ("settings", "storage"),
    ("jobs",),
    ("cluster",),
    ("cluster.local", "cluster.kuberay"),
    ("orchestration",),
    ("quests",),
    ("definitions",),
    ("xray",),
    ("cli",),
]
# The cluster core reaches a backend only through the one factory that maps names to providers.
FACTORY = "discord_ml.cluster.backends"


def _layer(module: str) -> int:
    """The layer of `discord_ml.<module>`: the longest matching prefix wins (cluster.local over cluster)."""
    name = module.removeprefix("discord_ml.")
    best, depth = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    assert best >= 0, f"{module} belongs to no layer: add it to LAYERS and to the README's tree"
    return best


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every discord_ml module `path` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("discord_ml"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("discord_ml")}
    return names


def test_imports_only_run_down_the_layers() -> None:
    upward = []
    for module, path in sorted(_modules().items()):
        if module == "discord_ml":
            continue
        for imported in sorted(_imports(path)):
            if _layer(imported) > _layer(module) and module != FACTORY:
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_the_top_level_stays_small_and_modules_stay_readable() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 3, loose
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {path: lines for path, lines in sizes.items() if lines > 400} == {}


@pytest.mark.parametrize("module", ["settings", "cluster.spec", "cluster.local.nodes", "xray.app", "definitions"])
def test_layers_are_known(module: str) -> None:
    assert _layer(f"discord_ml.{module}") >= 0
