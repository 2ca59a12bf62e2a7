"""The package layout is the architecture: imports only point down the layers, no package
cycle, no module over 500 lines (shared/DESIGN.md, "Layout").

Every ``import imagegate...`` counts, also those inside functions: a deferred import is
still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "imagegate"

# Higher imports lower; the same rank may import each other only without a cycle.
RANK = {
    "imagegate": 0,  # the package itself (__version__)
    "core": 0,
    "obs": 0,
    "config_secrets": 0,
    "config": 0,
    "client": 0,  # re-export of the SDK distribution (imagegate_client)
    "db": 1,
    "media": 1,
    "storage": 1,
    "upstream": 1,
    "providers": 2,
    "routing": 3,
    "catalog": 3,
    "accounts": 3,
    "generation": 4,
    "api": 5,
    "console": 6,
    "app": 7,
    "cli": 8,
    "tools": 8,
    "__main__": 9,
}
MAX_LINES = 500


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "imagegate"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "imagegate":
                found.update(f"imagegate.{alias.name}" for alias in node.names)
            elif node.module.startswith("imagegate."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("imagegate."))
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        source = _package(_module(path))
        for target in map(_package, _imports(path)):
            if target != source and not target.startswith("__version__"):
                edges[source].add(target)
    return edges


def test_every_package_has_a_layer() -> None:
    packages = {_package(_module(p)) for p in SRC.rglob("*.py") if "migrations" not in p.parts}
    assert packages - RANK.keys() == set(), "place the new package in RANK (and DESIGN.md)"


def test_imports_only_point_down() -> None:
    upward = [
        f"{a} -> {b}"
        for a, targets in _edges().items()
        for b in targets
        if b in RANK and RANK[b] > RANK[a]
    ]
    assert upward == []


def test_no_package_cycle() -> None:
    edges = _edges()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(a for a in edges if reaches(a, a, {a}))
    assert cycles == []


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
