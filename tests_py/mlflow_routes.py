"""Every route the installed MLflow serves, enumerated at test time (shared by the route sweep and the
authorization sweep): the Flask url_map, the FastAPI routers, and the user/role routes
``mlflow.server.auth`` adds. Moved unchanged from ``test_route_sweep.py``."""

from __future__ import annotations

import ast
import importlib.util
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
WEBSOCKET = "WEBSOCKET"  # pseudo-method for a websocket route (none in MLflow 3.17.2)


@dataclass
class Route:
    path: str  # concrete: every template parameter replaced by a sample value
    method: str
    templates: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)  # "flask", "fastapi", "auth"

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.method)


_FLASK_PARAM = re.compile(r"<(?:(\w+)(?:\([^>]*\))?:)?(\w+)>")
_FASTAPI_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def concrete(template: str) -> str:
    """`<int:x>`, `<x>`, `{x}` -> `1`; `<path:x>`, `{x:path}` -> `x/y`."""
    path = _FLASK_PARAM.sub(lambda m: "x/y" if m.group(1) == "path" else "1", template)
    return _FASTAPI_PARAM.sub(lambda m: "x/y" if m.group(2) == "path" else "1", path)


def flask_routes(app: Any) -> Iterator[tuple[str, str]]:
    for rule in app.url_map.iter_rules():
        for method in sorted(set(rule.methods) - {"HEAD", "OPTIONS"}):
            yield str(rule.rule), method


def fastapi_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Walks FastAPI's routes, including the routers it keeps unflattened (FastAPI >= 0.13x)."""
    from starlette.routing import Mount

    for route in routes:
        if isinstance(route, Mount):
            if route.path == "":
                continue  # the Flask app, mounted at "/": enumerated from its url_map
            if route.routes:
                yield from fastapi_routes(route.routes, prefix + route.path)
            else:  # an opaque sub-application: at least its own prefix must be gated
                for method in HTTP_METHODS:
                    yield prefix + route.path + "/x/y", method
            continue
        context = getattr(route, "include_context", None)
        if context is not None:
            sub = route.original_router
            children = [*sub.routes, *getattr(sub, "_low_priority_routes", [])]
            yield from fastapi_routes(children, prefix + context.prefix)
        elif hasattr(route, "path"):
            methods = getattr(route, "methods", None)
            for method in sorted(methods) if methods else [WEBSOCKET]:
                if method not in ("HEAD", "OPTIONS"):
                    yield prefix + route.path, method


def auth_routes(flask: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """The routes `mlflow.server.auth.create_app` adds, without running it (it would open its store):
    the paths are the constants of `mlflow.server.auth.routes`, the methods come from the
    `add_url_rule(...)` calls and route tables in `mlflow/server/auth/__init__.py`. A constant whose
    methods cannot be found that way is swept with every method."""
    import mlflow.server.auth.routes as constants

    spec = importlib.util.find_spec("mlflow.server.auth")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    methods: dict[str, set[str]] = {}

    def strings(node: ast.AST | None) -> list[str]:
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        return []

    def rule_of(call: ast.Call) -> tuple[ast.expr | None, list[str]]:
        kw = {k.arg: k.value for k in call.keywords}
        return kw.get("rule", call.args[0] if call.args else None), strings(kw.get("methods"))

    def is_add_url_rule(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_url_rule"
        )

    for node in ast.walk(tree):
        if is_add_url_rule(node):  # app.add_url_rule(rule=SIGNUP, methods=["GET"])
            assert isinstance(node, ast.Call)
            rule, verbs = rule_of(node)
            if isinstance(rule, ast.Name) and rule.id.isupper():
                methods.setdefault(rule.id, set()).update(verbs)
        elif isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            # for rule in [CREATE_USER, AJAX_CREATE_USER]: app.add_url_rule(rule=rule, methods=[...])
            names = [e.id for e in getattr(node.iter, "elts", []) if isinstance(e, ast.Name)]
            for call in filter(is_add_url_rule, ast.walk(node)):
                assert isinstance(call, ast.Call)
                rule, verbs = rule_of(call)
                if isinstance(rule, ast.Name) and rule.id == node.target.id:
                    for name in names:
                        methods.setdefault(name, set()).update(verbs)
        elif isinstance(node, ast.Tuple):
            # _RBAC_ROUTES = [(create_role, "POST", CREATE_ROLE, AJAX_CREATE_ROLE), ...]
            verbs = [v for v in strings(node) if v in HTTP_METHODS]
            names = [e.id for e in node.elts if isinstance(e, ast.Name) and e.id.isupper()]
            if len(verbs) == 1 and names and isinstance(getattr(constants, names[0], None), str):
                for name in names:
                    methods.setdefault(name, set()).update(verbs)

    flask_methods: dict[str, set[str]] = {}
    for template, method in flask:
        flask_methods.setdefault(template, set()).add(method)
    for name, value in sorted(vars(constants).items()):
        if name.isupper() and isinstance(value, str) and value.startswith("/"):
            served = methods.get(name) or flask_methods.get(value) or set(HTTP_METHODS)
            for method in sorted(served):
                yield value, method


@dataclass
class Enumeration:
    routes: dict[tuple[str, str], Route]
    flask: list[tuple[str, str]]
    fastapi: list[tuple[str, str]]
    auth: list[tuple[str, str]]

    def select(self, *sources: str) -> list[Route]:
        return [r for r in self.routes.values() if r.sources & set(sources)]


def enumerate_routes() -> Enumeration:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow.server
        from mlflow.server.fastapi_app import create_fastapi_app

        flask = sorted(set(flask_routes(mlflow.server.app)))
        native = sorted(set(fastapi_routes(create_fastapi_app(mlflow.server.app).routes)))
        auth = sorted(set(auth_routes(flask)))
    routes: dict[tuple[str, str], Route] = {}
    for source, pairs in (("flask", flask), ("fastapi", native), ("auth", auth)):
        for template, method in pairs:
            route = routes.setdefault((concrete(template), method), Route(concrete(template), method))
            route.templates.add(template)
            route.sources.add(source)
    return Enumeration(routes, flask, native, auth)
