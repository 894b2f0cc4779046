"""Package structure: no import cycle between lmforge modules, and source files short enough to read.

The stage order itself is import-linter's contract (pyproject.toml, ``make lint``); a layers
contract does not see a cycle inside one stage, which is what this test adds.
"""

from __future__ import annotations

from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"
MAX_LINES = 500
# Files still over MAX_LINES while they are being split. Only remove entries: the test fails when
# a listed file has shrunk to the limit (or is gone), so the list cannot go stale.
OVER_LIMIT: set[str] = set()


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c", "p.d"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    graph.add_import(importer="p.d", imported="p.a")
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_no_import_cycle_between_lmforge_modules() -> None:
    # TYPE_CHECKING imports count: a cycle hidden from the interpreter still ties two modules
    # together for a reader and for mypy.
    graph = grimp.build_graph("lmforge", cache_dir=None)
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(group) for group in cycles
    )


def test_source_files_stay_under_the_line_limit() -> None:
    lengths = {
        path.relative_to(SRC).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in SRC.rglob("*.py")
    }
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in OVER_LIMIT}
    assert not too_long, f"split these files to at most {MAX_LINES} lines: {too_long}"
    shrunk = sorted(name for name in OVER_LIMIT if lengths.get(name, 0) <= MAX_LINES)
    assert not shrunk, f"now at most {MAX_LINES} lines (or gone): remove {shrunk} from OVER_LIMIT"


def test_test_modules_have_unique_basenames() -> None:
    """pytest imports test files by basename (tests/ dirs are not packages): a second ``test_x.py``
    in another folder stops collection of the whole suite with 'import file mismatch'."""
    tests = Path(__file__).resolve().parent
    by_name: dict[str, list[str]] = {}
    for path in tests.rglob("*.py"):
        if path.name != "conftest.py" and "__pycache__" not in path.parts:
            by_name.setdefault(path.name, []).append(path.relative_to(tests).as_posix())
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"rename one of each: {clashes}"
