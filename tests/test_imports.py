"""Every module of minirlhf imports on its own, and the modules import each other without a cycle (seconds).

A cycle (a imports b, b imports a) works or fails depending on which module is imported first, so it shows up
as an ImportError in one notebook and not in another. Here each module is imported alone, with no minirlhf
module loaded before it, and the import graph is read from the source with `ast`.
"""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import minirlhf

PACKAGE = Path(minirlhf.__file__).parent


def all_modules() -> dict[str, Path]:
    """'minirlhf.world.gold' -> its file, for every module and sub-package (found by pkgutil, not imported)."""
    found = {"minirlhf": PACKAGE / "__init__.py"}

    def walk(folder: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(folder)]):
            name = f"{prefix}.{info.name}"
            if info.ispkg:
                found[name] = folder / info.name / "__init__.py"
                walk(folder / info.name, name)
            else:
                found[name] = folder / f"{info.name}.py"

    walk(PACKAGE, "minirlhf")
    return found


MODULES = all_modules()


# ------------------------------------------------------------------ the import graph, read with ast
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, name: str) -> list[str]:
    """The minirlhf modules one import statement loads (the module itself, not its parent packages)."""
    if isinstance(node, ast.Import):
        dotted = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from . import x, from .vocab import y
            package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        dotted = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for d in dotted:
        while d and d not in MODULES:  # import minirlhf.world.gold.x -> minirlhf.world.gold
            d = d.rpartition(".")[0]
        if d:
            out.append(d)
    return out


def imports_of(name: str, lazy: bool) -> set[str]:
    """The minirlhf modules `name` imports when it is loaded; with lazy=True also those imported inside functions.

    Imports under `if TYPE_CHECKING:` never run, so they are left out.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not lazy:
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.update(_targets(child, name))
            visit(child)

    visit(ast.parse(MODULES[name].read_text(encoding="utf-8")))
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None: depth-first search, a back edge to a module on the path closes it."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def dfs(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start, [start])):
            return cycle
    return None


# ------------------------------------------------------------------ tests
def test_the_walk_finds_the_subpackages():
    assert {"minirlhf.world", "minirlhf.world.gold", "minirlhf.world.generate", "minirlhf.pipeline"} <= set(MODULES)


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "minirlhf" or m.startswith("minirlhf.")]:
        del sys.modules[loaded]  # a fresh start for our package (third-party modules stay loaded: faster)
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-4)
print(json.dumps(failed))
"""


def test_every_module_imports_alone():
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, *MODULES], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{name}:\n{err}" for name, err in failed.items())


def test_no_import_cycle_at_module_level():
    graph = {name: imports_of(name, lazy=False) for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_toy_world_imports_nothing_else_and_gold_not_the_generator():
    """Even counting imports inside functions: the world is the bottom layer, and its judge reads no generator."""
    world = {name: imports_of(name, lazy=True) for name in MODULES if name.startswith("minirlhf.world")}
    for name, deps in world.items():
        outside = {d for d in deps if not d.startswith("minirlhf.world")}
        assert not outside, f"{name} imports {sorted(outside)}: the toy world must not depend on the stages"
    cycle = find_cycle(world)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    assert world["minirlhf.world.gold"] <= {"minirlhf.world.vocab", "minirlhf.world.records"}, (
        f"the gold labeler imports {sorted(world['minirlhf.world.gold'])}; it should read only vocab and records")
