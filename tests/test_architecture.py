"""The package's architecture rules, read from its source: public APIs only, one-way imports."""

from __future__ import annotations

import ast
from pathlib import Path

import tinywindow_otel

PACKAGE = "tinywindow_otel"
ROOT = Path(tinywindow_otel.__file__).resolve().parent
# Underscore names of the standard library that are documented API.
STDLIB_DOCUMENTED = {"_exit", "_getframe", "_asdict", "_replace", "_fields", "_make", "_field_defaults"}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def is_package(name: str) -> bool:
    return (ROOT.parent / Path(*name.split(".")) / "__init__.py").exists()


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, tree: ast.Module):
    """(imported module, imported names, node, at module level) for every import in ``tree``."""
    def visit(node, top: bool, type_checking: bool = False):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: no import at run time
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, [], child, top
            elif isinstance(child, ast.ImportFrom):
                yield resolve(module, child), [a.name for a in child.names], child, top
            inner_top = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, inner_top)

    yield from visit(tree, True)


def targets(source: str, names: list[str]) -> list[str]:
    """The package modules an import makes run: the module itself, or its submodules named."""
    out = []
    for name in names or [None]:
        sub = f"{source}.{name}" if name else None
        if sub and (is_package(sub) or (ROOT.parent / Path(*sub.split("."))).with_suffix(".py").exists()):
            out.append(sub)
        else:
            out.append(source)
    return out


def test_no_private_module_or_name_of_another_distribution_is_imported():
    offences = []
    for module, tree in modules().items():
        for source, names, node, _ in imports(module, tree):
            if source.split(".")[0] in (PACKAGE, "__future__"):
                continue
            where = f"{module}:{node.lineno}"
            if any(part.startswith("_") for part in source.split(".")):
                offences.append(f"{where} imports the private module {source}")
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    offences.append(f"{where} imports the private name {source}.{name}")
    assert offences == []


def test_no_foreign_private_attribute_is_read():
    """``x._name`` is only allowed for names this package defines itself (on its own objects)."""
    trees = modules()
    ours: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                ours.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                ours.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                ours.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                for const in ast.walk(node.value):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        ours.add(const.value)
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("setattr", "getattr"):
                if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                    ours.add(node.args[1].value)
    offences = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if node.attr not in ours and node.attr not in STDLIB_DOCUMENTED:
                    offences.append(f"{module}:{node.lineno} reads {ast.unparse(node)}")
    assert offences == []


def graph(include_function_level: bool = False) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, tree in modules().items():
        deps = edges.setdefault(module, set())
        for source, names, _, top in imports(module, tree):
            if source.split(".")[0] != PACKAGE or not (top or include_function_level):
                continue
            for target in targets(source, names):
                if target != module:
                    deps.add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "active"
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "active":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_module_imports_form_no_cycle():
    # A module importing its own package (``from .. import x``) runs the
    # package's __init__, which imports it back: counted as a cycle too.
    assert cycles(graph()) == []


def test_no_function_level_import_dodges_a_cycle():
    """A lazy import is fine; one that would close a cycle if it were at module level is not."""
    module_level = graph()
    offences = []
    for module, tree in modules().items():
        for source, names, node, top in imports(module, tree):
            if top or source.split(".")[0] != PACKAGE:
                continue
            for target in targets(source, names):
                trial = {k: set(v) for k, v in module_level.items()}
                trial.setdefault(module, set()).add(target)
                if cycles(trial):
                    offences.append(f"{module}:{node.lineno} imports {target} inside a function")
    assert offences == []


def test_the_public_surface_sits_over_internal():
    internal = {name for name in modules() if name.startswith(f"{PACKAGE}._internal")}
    assert {f"{PACKAGE}._internal.{name}" for name in (
        "series", "labels", "selfmetrics", "wrapper", "producer", "render", "runtime", "otel")} <= internal
    # _internal never imports the public modules, except the ones it is built for.
    allowed = {f"{PACKAGE}.catalog", f"{PACKAGE}.config", f"{PACKAGE}.metrics"}
    for module in internal:
        for dep in graph()[module]:
            assert dep.startswith(f"{PACKAGE}._internal") or dep in allowed, (module, dep)
