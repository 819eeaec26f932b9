"""The package's architecture rules, read from its source: public APIs only, one-way imports."""

from __future__ import annotations

import ast
import textwrap
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


# --- private attributes: whose object is it? -------------------------------------------------
#
# A light type inference over the package's source, enough to tell an object of one of the
# package's own classes (or a module of the package) from an object of another distribution:
# ``self``/``cls``, annotated parameters, names and ``self.x`` attributes assigned from a
# constructor or an annotated function, imported names. ``OURS`` and ``FOREIGN`` are the two
# answers; None means "not known".

OURS, FOREIGN = "ours", "foreign"
ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}


class Classes:
    """Every class the package defines: its bases and the attribute names it defines itself."""

    def __init__(self, trees: dict[str, ast.Module]) -> None:
        self.defs: dict[str, list[tuple[str, ast.ClassDef]]] = {}
        for module, tree in trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    self.defs.setdefault(node.name, []).append((module, node))
        self.own: dict[str, set[str]] = {name: set() for name in self.defs}
        # class -> attribute -> ("annotation" | "value", node): what ``self.x`` was declared or assigned as
        self.attr_types: dict[str, dict[str, tuple[str, ast.expr]]] = {name: {} for name in self.defs}
        for name, defs in self.defs.items():
            for _, node in defs:
                self._collect(name, node)

    def _collect(self, name: str, node: ast.ClassDef) -> None:
        own, types = self.own[name], self.attr_types[name]
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(item.name)
            elif isinstance(item, ast.Assign):
                for target in item.targets:
                    if isinstance(target, ast.Name):
                        own.add(target.id)
                        if target.id == "__slots__":
                            own.update(c.value for c in ast.walk(item.value)
                                       if isinstance(c, ast.Constant) and isinstance(c.value, str))
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                own.add(item.target.id)
                types[item.target.id] = ("annotation", item.annotation)
        for function in node.body:
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) or not function.args.args:
                continue
            me = function.args.args[0].arg  # self / cls
            for sub in ast.walk(function):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target] if isinstance(
                    sub, (ast.AnnAssign, ast.AugAssign)) else []
                for target in targets:
                    for t in ast.walk(target):
                        if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me
                                and isinstance(t.ctx, ast.Store)):
                            own.add(t.attr)
                            if isinstance(sub, ast.AnnAssign):
                                types[t.attr] = ("annotation", sub.annotation)
                            elif isinstance(sub, ast.Assign) and t is target:
                                types.setdefault(t.attr, ("value", sub.value))

    def bases(self, name: str) -> list[ast.expr]:
        return [base for _, node in self.defs.get(name, []) for base in node.bases]

    def defines(self, name: str, attr: str, seen: frozenset = frozenset()) -> bool | None:
        """True: the class or one of the package's classes it derives from defines ``attr``;
        None: it does not, but it derives from a class of another distribution (so ``attr`` is that
        class's); False: neither."""
        if attr in self.own.get(name, ()):
            return True
        foreign_base = False
        for base in self.bases(name):
            base_name = _base_name(base)
            if base_name in ("object", "Generic", "Protocol", "NamedTuple", "Exception"):
                continue
            if base_name in self.defs and base_name not in seen:
                found = self.defines(base_name, attr, seen | {name})
                if found:
                    return True
                foreign_base = foreign_base or found is None
            else:
                foreign_base = True
        return None if foreign_base else False

    def defined_anywhere(self, attr: str) -> bool:
        return any(attr in own for own in self.own.values())


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


class Module:
    """The names one module binds at its top level: imports, classes, functions, assignments."""

    def __init__(self, name: str, tree: ast.Module) -> None:
        self.name = name
        self.imports: dict[str, tuple[str, str | None]] = {}  # local -> (module, name or None)
        self.classes: set[str] = set()
        self.functions: dict[str, ast.expr | None] = {}  # name -> return annotation
        self.values: dict[str, ast.expr] = {}
        for node in tree.body:
            self._bind(node)

    def _bind(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.imports[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(self.name, node)
            for alias in node.names:
                self.imports[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.ClassDef):
            self.classes.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions[node.name] = node.returns
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.values[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            self.values[node.target.id] = node.annotation if node.value is None else node.value
        elif isinstance(node, (ast.If, ast.Try)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt) and not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
                        node.test)):
                    self._bind(child)


class Inference:
    """What an expression is: (OURS, class name) for an instance of one of the package's classes,
    (OURS, "class:<name>") for the class itself, (OURS, None) for a module or function of the
    package, (FOREIGN, what) for another distribution's objects, None when not known."""

    def __init__(self, trees: dict[str, ast.Module]) -> None:
        self.trees = trees
        self.classes = Classes(trees)
        self.modules = {name: Module(name, tree) for name, tree in trees.items()}

    # -- names ------------------------------------------------------------------------------

    def global_name(self, module: str, name: str, depth: int = 0):
        table = self.modules.get(module)
        if table is None or depth > 8:
            return None
        if name in table.classes:
            return OURS, f"class:{name}"
        if name in table.functions:
            returns = table.functions[name]
            return self.annotation(module, returns) if returns is not None else (OURS, None)
        if name in table.imports:
            source, imported = table.imports[name]
            if source.split(".")[0] != PACKAGE:
                return FOREIGN, f"{source}.{imported}" if imported else source
            if imported is None or f"{source}.{imported}" in self.modules:
                return OURS, None  # one of the package's modules
            return self.global_name(source, imported, depth + 1)
        if name in table.values:
            return self.expr(module, table.values[name], {}, depth + 1)
        return None

    def annotation(self, module: str, node: ast.expr | None, depth: int = 0):
        if node is None:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(node, ast.BinOp):  # X | None
            for side in (node.left, node.right):
                if not (isinstance(side, ast.Constant) and side.value is None):
                    return self.annotation(module, side, depth)
            return None
        if isinstance(node, ast.Subscript):
            if _base_name(node.value) in ("type", "Optional"):
                return self.annotation(module, node.slice, depth)
            node = node.value
        kind = self.expr(module, node, {}, depth + 1)
        if kind is not None and kind[0] == OURS and kind[1] and kind[1].startswith("class:"):
            return OURS, kind[1][len("class:"):]
        if kind is not None and kind[0] == FOREIGN:
            return kind
        return None

    # -- expressions ------------------------------------------------------------------------

    def expr(self, module: str, node: ast.expr, scope: dict, depth: int = 0):
        if depth > 12:
            return None
        if isinstance(node, ast.Name):
            if node.id in scope:
                return scope[node.id]
            return self.global_name(module, node.id, depth)
        if isinstance(node, ast.Call):
            func = self.expr(module, node.func, scope, depth + 1)
            if func is None:
                return None
            if func[0] == FOREIGN:
                return FOREIGN, f"{func[1]}()"
            if func[1] and func[1].startswith("class:"):
                return OURS, func[1][len("class:"):]
            return func if func[1] else None  # an annotated function of ours
        if isinstance(node, ast.Attribute):
            owner = self.expr(module, node.value, scope, depth + 1)
            if owner is None:
                return None
            if owner[0] == FOREIGN:
                return FOREIGN, f"{owner[1]}.{node.attr}"
            if owner[1] is None:  # a module of ours
                target = self._module_of(module, node.value)
                return self.global_name(target, node.attr, depth + 1) if target else None
            cls = owner[1][len("class:"):] if owner[1].startswith("class:") else owner[1]
            declared = self.classes.attr_types.get(cls, {}).get(node.attr)
            if declared is None:
                return None
            defining = self.classes.defs[cls][0][0]
            how, declaration = declared
            if how == "value":
                return self.expr(defining, declaration, {}, depth + 1)
            return self.annotation(defining, declaration, depth + 1)
        return None

    def _module_of(self, module: str, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            imported = self.modules[module].imports.get(node.id)
            if imported is not None:
                source, name = imported
                return f"{source}.{name}" if name else source
        return None


def _scopes(inference: Inference, module: str, tree: ast.Module):
    """(function or None, its enclosing class or None, name -> kind) for every scope of ``tree``."""
    def visit(node, cls, inherited):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, child.name, inherited)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                scope = dict(inherited)
                args = child.args.posonlyargs + child.args.args + child.args.kwonlyargs
                decorators = {ast.unparse(d) for d in getattr(child, "decorator_list", [])}
                for i, arg in enumerate(args):
                    if i == 0 and cls is not None and "staticmethod" not in decorators:
                        scope[arg.arg] = (OURS, f"class:{cls}" if "classmethod" in decorators else cls)
                    else:
                        kind = inference.annotation(module, arg.annotation)
                        if kind is not None:
                            scope[arg.arg] = kind
                        else:
                            scope.pop(arg.arg, None)
                for sub in ast.walk(child):  # local names assigned from something known
                    if isinstance(sub, ast.Assign) and len(sub.targets) == 1 and isinstance(sub.targets[0], ast.Name):
                        kind = inference.expr(module, sub.value, scope)
                        if kind is not None:
                            scope[sub.targets[0].id] = kind
                yield child, cls, scope
                yield from visit(child, None, scope)
            else:
                yield from visit(child, cls, inherited)

    yield tree, None, {}
    yield from visit(tree, None, {})


def private_accesses():
    """(module, line, text, receiver node, attribute, scope) for every ``x._name`` and ``getattr(x, "_name")``."""
    trees = modules()
    inference = Inference(trees)
    for module, tree in trees.items():
        seen: set[int] = set()
        for scope_node, _, scope in reversed(list(_scopes(inference, module, tree))):
            for node in ast.walk(scope_node):
                if id(node) in seen:
                    continue
                if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                    seen.add(id(node))
                    yield module, node.lineno, ast.unparse(node), node.value, node.attr, scope, inference
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ACCESSORS
                      and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                      and isinstance(node.args[1].value, str) and node.args[1].value.startswith("_")
                      and not node.args[1].value.startswith("__")):
                    seen.add(id(node))
                    yield module, node.lineno, ast.unparse(node), node.args[0], node.args[1].value, scope, inference


def foreign_private_reason(module, receiver, attr, scope, inference: Inference) -> str | None:
    """Why ``receiver.<attr>`` reaches into another distribution's privates (None: it does not)."""
    if attr in STDLIB_DOCUMENTED:
        return None
    kind = inference.expr(module, receiver, scope)
    if kind is None:
        # Not known whose it is: only a name one of the package's classes defines passes.
        return None if inference.classes.defined_anywhere(attr) else "no class of this package defines it"
    if kind[0] == FOREIGN:
        return f"it belongs to {kind[1]}"
    if kind[1] is None:
        return None  # a module or function of the package
    cls = kind[1][len("class:"):] if kind[1].startswith("class:") else kind[1]
    defined = inference.classes.defines(cls, attr)
    if defined is None:
        return f"{cls} inherits it from another distribution's class"
    return None


def test_no_foreign_private_attribute_is_read():
    """``x._name`` and ``getattr(x, "_name")`` only on the package's own objects and for names they define.

    Foreign: an object of a class of another distribution (or such a module), and an attribute a
    class of ours inherits from one (``self._collector`` in a ``MetricReader`` subclass).
    """
    offences = []
    for module, line, text, receiver, attr, scope, inference in private_accesses():
        reason = foreign_private_reason(module, receiver, attr, scope, inference)
        if reason is not None:
            offences.append(f"{module}:{line} {text}: {reason}")
    assert offences == []


def cross_module_reason(module, receiver, attr, scope, inference: Inference) -> str | None:
    """Why ``receiver.<attr>`` reaches into a private of a class defined in another module of the package."""
    if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
        return None  # a subclass uses what its base class gives it
    kind = inference.expr(module, receiver, scope)
    if kind is not None and kind[0] == FOREIGN:
        return None  # the test above
    if kind is not None and kind[1] is not None:
        cls = kind[1][len("class:"):] if kind[1].startswith("class:") else kind[1]
        homes = {home for home, _ in inference.classes.defs.get(cls, [])}
        return None if module in homes else f"{cls} is defined in {', '.join(sorted(homes))}"
    if kind is not None:
        return None  # a module or function of the package: its underscore names are imports' business
    homes = {home for name, defs in inference.classes.defs.items() for home, _ in defs
             if attr in inference.classes.own[name]}
    return None if not homes or module in homes else f"only {', '.join(sorted(homes))} defines it"


def test_no_module_reaches_into_another_modules_private_attributes():
    """Modules use each other's public names: ``metric._series_class = ...`` from another module is a reach-in."""
    offences = []
    for module, line, text, receiver, attr, scope, inference in private_accesses():
        reason = cross_module_reason(module, receiver, attr, scope, inference)
        if reason is not None:
            offences.append(f"{module}:{line} {text}: {reason}")
    assert offences == []


def test_the_private_attribute_check_sees_whose_object_it_is():
    """The check above catches the reach-ins it exists for (in a scratch copy of real code)."""
    def offences(source: str) -> list[str]:
        tree = ast.parse(textwrap.dedent(source))
        trees = {**modules(), f"{PACKAGE}._internal.scratch": tree}
        inference = Inference(trees)
        found = []
        for scope_node, _, scope in _scopes(inference, f"{PACKAGE}._internal.scratch", tree):
            if not isinstance(scope_node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(scope_node):
                if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                    receiver, attr = node.value, node.attr
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ACCESSORS:
                    receiver, attr = node.args[0], node.args[1].value
                else:
                    continue
                reason = foreign_private_reason(f"{PACKAGE}._internal.scratch", receiver, attr, scope, inference)
                if reason is not None:
                    found.append(f"{ast.unparse(node)}: {reason}")
        return found

    caught = offences("""
        from opentelemetry.sdk.metrics import MeterProvider
        from .otel import Pipeline, get_pipeline

        def reach_in(pipeline: Pipeline):
            reader = pipeline.scrape_reader
            getattr(reader, "_collector")
            provider = get_pipeline().provider
            provider._lock
            pipeline.provider._sdk_config
            MeterProvider()._all_metric_readers
    """)
    assert len(caught) == 4, caught
    assert "inherits it from another distribution's class" in caught[0]
    assert all("opentelemetry" in c for c in caught[1:]), caught
    allowed = offences("""
        from .otel import Pipeline
        from ..metrics import REGISTRY

        def own_objects(pipeline: Pipeline):
            pipeline.scrape_reader._received
            getattr(pipeline.exporter, "_producer")
            REGISTRY._metrics
    """)
    assert allowed == []


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
