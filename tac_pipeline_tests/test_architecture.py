"""The package's layers, read from its import graph (every ``import`` anywhere in a module, lazy ones inside
functions included) and from its source:

- no import circle anywhere;
- the libraries (``tac/``, ``encoders/``) and the helpers below them (``common/``) never import upward, and
  read no environment;
- only ``tac_pipeline/config.py`` reads the environment;
- ``defs/`` holds the Dagster objects, and nothing outside ``definitions.py``, the CLI and the tests builds
  the whole Definitions;
- at most five loose modules sit at the top of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tac_pipeline

PACKAGE = Path(tac_pipeline.__file__).resolve().parent
#: Below the pipeline: what each may import from the package (its own subpackage always).
LIBRARIES = {
    "tac_pipeline.common": (),
    "tac_pipeline.tac": ("tac_pipeline.common",),
    "tac_pipeline.encoders": ("tac_pipeline.common",),
}
CONFIG_MODULE = "tac_pipeline.config"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def package_imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports anywhere in its body (``from a import
    b`` counts as importing ``a.b`` when that is a module, else ``a``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
                targets.update(submodules or {base})
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module importing ``start`` runs (its packages' ``__init__`` included)."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts))):
            if parent in graph and parent not in seen:
                seen.add(parent)
                todo.append(parent)
        for target in graph.get(module, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_circle_anywhere():
    assert import_cycles(package_imports()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_the_libraries_never_import_upward():
    graph = package_imports()
    wrong = []
    for module, targets in graph.items():
        library = next((lib for lib in LIBRARIES if _within(module, lib)), None)
        if library is None:
            continue
        allowed = (library, *LIBRARIES[library])
        wrong += [f"{module} -> {t}" for t in sorted(targets) if not any(_within(t, a) for a in allowed)]
    assert wrong == []


def _reads_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb", "putenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in ("environ", "getenv", "environb", "putenv") for alias in node.names):
                lines.append(node.lineno)
    return lines


def test_only_the_configuration_module_reads_the_environment():
    readers = {}
    for name, path in _modules().items():
        lines = _reads_environment(ast.parse(path.read_text(), str(path)))
        if lines and name != CONFIG_MODULE:
            readers[name] = lines
    assert readers == {}, f"read the environment outside {CONFIG_MODULE}: {readers}"
    assert _reads_environment(ast.parse((PACKAGE / "config.py").read_text()))  # the check sees a reader


def test_at_most_five_loose_modules_at_the_top():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 5, loose


def test_the_command_line_loads_no_asset_module():
    graph = package_imports()
    for root in (m for m in graph if _within(m, "tac_pipeline.cli")):
        heavy = sorted(m for m in reachable(graph, root) if _within(m, "tac_pipeline.defs.assets"))
        assert not heavy, f"{root} imports {heavy}"
