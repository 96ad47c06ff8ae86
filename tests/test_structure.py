"""The shape of the code, checked on the source (no imports run): short functions and classes
in `proxy/`, no import cycle between the modules of `proxy`, `storage`, `replay` and
`hoop_tui`, and no import against the layering

    hoop_tui  ->  proxy  ->  replay  ->  storage        (Textual only in hoop_tui)

Known offenders are listed with the engineer cutting them. The lists only shrink: an entry
that is no longer an offender fails too, so it is removed in the commit that fixes it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("proxy", "storage", "replay", "hoop_tui")

MAX_FUNCTION_LINES = 60  # from `def` to its last line, docstring included
MAX_CLASS_LINES = 400

# "path::Qualified.name" -> who is cutting it (issue 14).
TOO_LONG_TODAY: dict[str, str] = {}

# package -> the packages and libraries it must never import.
FORBIDDEN = {
    "proxy": {"hoop_tui", "textual"},
    "replay": {"hoop_tui", "textual", "proxy"},
    "storage": {"hoop_tui", "textual", "proxy", "replay"},
}

# "importer -> imported" -> who removes it.
BACK_ARROWS_TODAY: dict[str, str] = {}

# Imports that close a cycle today: "importer -> imported" -> who removes it. The graph without
# them has no cycle.
CYCLE_EDGES_TODAY: dict[str, str] = {}


def python_files(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# -- length ---------------------------------------------------------------------------------------


def too_long(path: Path) -> Iterator[tuple[str, int, int]]:
    """(qualified name, lines, limit) of each function or class of `path` over its limit."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(child, ast.ClassDef) else MAX_FUNCTION_LINES
                if lines > limit:
                    yield name, lines, limit
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(path.read_text(), str(path)), "")


def test_no_function_over_60_lines_and_no_class_over_400_in_proxy() -> None:
    found = {
        f"{path.relative_to(ROOT).as_posix()}::{name}": f"{lines} lines (limit {limit})"
        for path in python_files("proxy")
        for name, lines, limit in too_long(path)
    }
    new = {key: size for key, size in found.items() if key not in TOO_LONG_TODAY}
    cut = {key: owner for key, owner in TOO_LONG_TODAY.items() if key not in found}
    assert not new, f"too long (cut them, or split the class): {new}"
    assert not cut, f"short enough now: remove them from TOO_LONG_TODAY: {cut}"


# -- imports --------------------------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of PACKAGES (and `textual`) it imports anywhere: at the top, inside
    a function, or under TYPE_CHECKING. Each is an arrow of the structure."""
    modules = {module_name(path): path for package in PACKAGES for path in python_files(package)}

    def resolve(name: str) -> str | None:
        if name == "textual" or name.startswith("textual."):
            return "textual"
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = module.split(".")[: len(module.split(".")) - node.level + package]
                    base = ".".join([*parent, base] if base else parent)
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target is not None and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in graph:
                    continue
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def arrows(graph: dict[str, set[str]]) -> set[str]:
    return {f"{source} -> {target}" for source, targets in graph.items() for target in targets}


def test_no_package_imports_against_the_layering() -> None:
    graph = import_graph()
    back = {
        arrow
        for arrow in arrows(graph)
        if arrow.split(" -> ")[1].split(".")[0] in FORBIDDEN.get(arrow.split(".")[0], set())
    }
    new = sorted(back - set(BACK_ARROWS_TODAY))
    gone = {arrow: owner for arrow, owner in BACK_ARROWS_TODAY.items() if arrow not in back}
    assert not new, f"imports against hoop_tui -> proxy -> replay -> storage: {new}"
    assert not gone, f"gone now: remove from BACK_ARROWS_TODAY in tests/test_structure.py: {gone}"


def test_a_verdict_becomes_recording_fields_in_one_place() -> None:
    """Every VERDICT event a layer records (the enforcer, the PostgreSQL session's own fast
    paths) is made of `Verdict.recorded()`, never of fields spelled out at the call."""
    spelled_out = []
    for path in python_files("proxy"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            verdict_event = any(
                isinstance(arg, ast.Attribute) and arg.attr == "VERDICT" for arg in node.args
            )
            from_verdict = any(
                isinstance(arg, ast.Starred)
                and isinstance(arg.value, ast.Call)
                and isinstance(arg.value.func, ast.Attribute)
                and arg.value.func.attr == "recorded"
                for arg in [
                    *node.args,
                    *(e for a in node.args if isinstance(a, ast.Tuple) for e in a.elts),
                ]
            )
            if verdict_event and not from_verdict:
                spelled_out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if name == "record_verdict" and any(isinstance(a, ast.Constant) for a in node.args[1:]):
                spelled_out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not spelled_out, (
        f"VERDICT fields spelled out instead of Verdict.recorded(): {spelled_out}"
    )


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    in_cycle = {
        arrow
        for component in cycles(graph)
        for arrow in arrows({module: graph[module] & set(component) for module in component})
    }
    gone = {edge: owner for edge, owner in CYCLE_EDGES_TODAY.items() if edge not in in_cycle}
    for edge in CYCLE_EDGES_TODAY:
        source, target = edge.split(" -> ")
        graph.get(source, set()).discard(target)
    left = cycles(graph)
    assert not left, f"import cycles (each list imports itself round): {left}"
    assert not gone, f"no longer in a cycle: remove from CYCLE_EDGES_TODAY: {gone}"


# -- names ----------------------------------------------------------------------------------------

# Class names defined at the top of two or more modules today: name -> why it is left.
SHARED_CLASS_NAMES_TODAY: dict[str, str] = {}


def test_no_two_top_level_classes_share_a_name() -> None:
    """One idea, one name: a reader who meets `Caller` or `Grant` knows which one it is."""
    where: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in python_files(package):
            for node in ast.parse(path.read_text(), str(path)).body:
                if isinstance(node, ast.ClassDef):
                    where.setdefault(node.name, []).append(path.relative_to(ROOT).as_posix())
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    new = {name: paths for name, paths in shared.items() if name not in SHARED_CLASS_NAMES_TODAY}
    gone = sorted(set(SHARED_CLASS_NAMES_TODAY) - set(shared))
    assert not new, f"class names defined twice (rename the lesser one): {new}"
    assert not gone, f"no longer shared: remove from SHARED_CLASS_NAMES_TODAY: {gone}"
