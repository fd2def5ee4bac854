"""No import circle inside `src/tulle`: the import graph, read from the source with `ast`.

What counts as "A imports B" (an edge A -> B):

- every `import` and `from ... import` statement anywhere in A: at module
  level, under `if TYPE_CHECKING:`, inside `try:`, and inside functions (lazy
  imports). A type-only or lazy import is still a dependency: the circle it
  closes is one the reader has to hold in mind, and it turns into a run-time
  circle with the next refactor. Lazy imports stay welcome where they keep
  start-up fast (the CLI, grpc, cryptography), as long as they point down.
- `from P import n` is an edge to the module `P.n` when there is one, else to
  `P`; `import P.Q` is an edge to `P.Q` (the deepest name that is a module);
  relative imports are resolved.
- `importlib.import_module("tulle.x")` and `__import__("tulle.x")` with a
  literal name.

What does not count:

- the parent packages that Python runs before a submodule (`import tulle.a.b`
  runs `tulle/a/__init__.py`): counting them would make every package whose
  `__init__` re-exports its submodules (`tulle.proxy.http2`) a circle with each
  of them. An `__init__` that imports a submodule which imports the package
  back is still caught: both edges are statements.
- names computed at run time. The one place that imports by computed name is
  the entry point, `tulle.cli.main`, which imports every command group from its
  table; `test_nothing_imports_the_entry_point` covers it.

Two graphs are checked: modules, and for every package the graph of its direct
members (subpackages collapsed into one node each), so that `control/` and
`viz/` cannot import each other through different modules either. A failure
names one circle, with the file and line of each import in it. Break a circle
by moving the shared piece down into a module both sides may import, not by
hiding an import in a function.
"""

from __future__ import annotations

import ast
import functools
import itertools
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ENTRY_POINT = "tulle.cli.main"

# An edge's evidence: "path:line" of the import statement.
Graph = dict[str, dict[str, str]]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module under `root / package`."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _deepest_module(name: str, modules: set[str]) -> str | None:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(
    tree: ast.Module, module: str, is_package: bool, modules: set[str]
) -> list[tuple[str, int]]:
    """(imported module of src, line) for every import in the tree, wherever it is."""
    here = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(_deepest_module(alias.name, modules), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                chosen = submodule if submodule in modules else _deepest_module(target, modules)
                found.append((chosen, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
        ):
            found.append((_deepest_module(node.args[0].value, modules), node.lineno))
    return [(name, line) for name, line in found if name is not None and name != module]


def import_graph(root: Path, package: str) -> Graph:
    """module -> {imported module: "path:line"} for the modules under `root / package`."""
    files = module_files(root, package)
    modules = set(files)
    graph: Graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: dict[str, str] = {}
        for target, line in _imports(tree, module, path.name == "__init__.py", modules):
            edges.setdefault(target, f"{path.relative_to(root).as_posix()}:{line}")
        graph[module] = edges
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One circle (a list of nodes, first repeated last) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        # Tarjan's algorithm, iterative: the graph is deep enough for recursion to hurt.
        nonlocal counter
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, {})))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_in(graph, set(component)) for component in components]


def _circle_in(graph: Graph, component: set[str]) -> list[str]:
    """A shortest circle through the component's first node (breadth-first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for successor in sorted(graph.get(node, {})):
                if successor not in component:
                    continue
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no circle in a strongly connected component: {sorted(component)}")


def member_graphs(graph: Graph) -> dict[str, Graph]:
    """For every package: its direct members (modules, subpackages collapsed) and their imports."""
    per_package: dict[str, Graph] = defaultdict(dict)
    for importer, edges in graph.items():
        for imported, where in edges.items():
            a, b = importer.split("."), imported.split(".")
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            if common in (len(a), len(b)):
                continue  # a package and its own member: covered by the module graph
            package = ".".join(a[:common])
            member_a, member_b = ".".join(a[: common + 1]), ".".join(b[: common + 1])
            per_package[package].setdefault(member_a, {}).setdefault(member_b, where)
    return per_package


def describe(graph: Graph, circle: list[str]) -> str:
    steps = [f"  {a} -> {b}  ({graph[a][b]})" for a, b in itertools.pairwise(circle)]
    return "\n".join(steps)


@functools.cache
def tulle_graph() -> Graph:
    return import_graph(SRC, "tulle")


def test_no_module_imports_itself_back() -> None:
    graph = tulle_graph()
    found = cycles(graph)
    assert not found, "import circles between modules:\n" + "\n\n".join(
        describe(graph, circle) for circle in found
    )


def test_no_package_imports_a_sibling_that_imports_it_back() -> None:
    graph = tulle_graph()
    problems = [
        f"inside {package}:\n{describe(members, circle)}"
        for package, members in sorted(member_graphs(graph).items())
        for circle in cycles(members)
    ]
    assert not problems, "import circles between packages:\n" + "\n\n".join(problems)


def test_nothing_imports_the_entry_point() -> None:
    # cli/main imports every command group by name from its table, which the
    # graph cannot see: a module importing it back would close a circle.
    graph = tulle_graph()
    importers = sorted(m for m, edges in graph.items() if ENTRY_POINT in edges)
    assert importers == ["tulle.__main__"]


# -- the checker itself, on a made-up package ------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checker_sees_type_checking_lazy_relative_and_by_name_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import b\n",
            "pkg/b.py": "def f() -> None:\n    from . import c\n",
            "pkg/c.py": "import importlib\nimportlib.import_module('pkg.a')\n",
            "pkg/d.py": "import pkg.a.nothing\nimport os\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b": "pkg/a.py:3"}
    assert graph["pkg.b"] == {"pkg.c": "pkg/b.py:2"}
    assert graph["pkg.c"] == {"pkg.a": "pkg/c.py:2"}
    assert graph["pkg.d"] == {"pkg.a": "pkg/d.py:1"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert describe(graph, cycles(graph)[0]).splitlines()[0] == "  pkg.a -> pkg.b  (pkg/a.py:3)"


def test_checker_ignores_parent_packages_but_not_an_init_imported_back(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from pkg.sub.x import X\n",
            "pkg/sub/x.py": "X = 1\n",
            "pkg/sub/y.py": "from pkg.sub.x import X\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert cycles(graph) == []  # y -> x runs sub/__init__ -> x: no circle
    (tmp_path / "pkg/sub/x.py").write_text("from pkg.sub import y\nX = 1\n", encoding="utf-8")
    assert cycles(import_graph(tmp_path, "pkg")) == [["pkg.sub.x", "pkg.sub.y", "pkg.sub.x"]]


def test_checker_finds_circles_between_packages_through_different_modules(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/model.py": "",
            "pkg/low/server.py": "from pkg.high.api import serve\n",
            "pkg/high/__init__.py": "",
            "pkg/high/api.py": "from pkg.low.model import Model\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert cycles(graph) == []
    members = member_graphs(graph)
    assert cycles(members["pkg"]) == [["pkg.high", "pkg.low", "pkg.high"]]
