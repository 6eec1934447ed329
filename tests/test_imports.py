"""The package's import graph: no cycles among module-level imports, and dimr.config at the bottom."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dimr"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """dimr modules imported at module level by `path` (imports inside functions are not edges)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            # a module and every package above it run on import (the root `dimr` holds nothing)
            out |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & modules
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: modules it imports}; a module's own enclosing packages are not edges (they are being
    initialised when it runs: a sibling import inside a package is how packages are written)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for m, p in paths.items():
        enclosing = {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)}
        graph[m] = module_level_imports(p, set(paths)) - {m} - enclosing
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40  # every module was parsed
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_dimr_config_is_the_bottom_of_the_package():
    code = "import sys, dimr.config; print(sorted(m for m in sys.modules if m.startswith('dimr')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['dimr', 'dimr.config', 'dimr.errors']"
