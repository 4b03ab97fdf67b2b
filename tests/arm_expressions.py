"""A small evaluator of ARM template expressions, to fill templates in tests: string literals, numbers,
function calls, `.property` and `[index]` access, `if` evaluated lazily (as ARM: "When the condition is True, only
the true value is evaluated", MicrosoftDocs/azure-docs articles/azure-resource-manager/templates/
template-functions-logical.md, "if") and `lambda` for `toObject`.

`evaluate()` covers what `templates/` uses; `Evaluator` adds the functions `infra/main.json` uses, with
`reference()` and `list()` answered by the test (there is no Azure here).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:('(?:[^']|'')*')|(-?\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(\()|(\))|(,)|(\.)|(\[)|(\]))")

# AST: ("lit", value) | ("call", name, [args]) | ("prop", node, name) | ("index", node, expr)
Node = tuple[Any, ...]


def parse(text: str) -> Node:
    """The AST of one expression (the text between the outer brackets)."""
    tokens = [m for m in _TOKEN.finditer(text) if m.group(0).strip()]
    pos = 0

    def peek() -> str:
        return tokens[pos].group(0).strip() if pos < len(tokens) else ""

    def take() -> re.Match[str]:
        nonlocal pos
        token = tokens[pos]
        pos += 1
        return token

    def expression() -> Node:
        token = take()
        literal, number, name = token.group(1), token.group(2), token.group(3)
        node: Node
        if literal is not None:
            node = ("lit", literal[1:-1].replace("''", "'"))
        elif number is not None:
            node = ("lit", json.loads(number))
        elif name is not None:
            assert take().group(0).strip() == "(", f"call expected after {name}"
            args = []
            while peek() != ")":
                args.append(expression())
                if peek() == ",":
                    take()
            take()
            node = ("call", name.lower(), args)
        else:
            raise ValueError(f"unexpected token {token.group(0)!r} in {text!r}")
        while peek() in (".", "["):
            if take().group(0).strip() == ".":
                node = ("prop", node, take().group(3))
            else:
                index = expression()
                assert take().group(0).strip() == "]"
                node = ("index", node, index)
        return node

    node = expression()
    assert pos == len(tokens), f"trailing tokens in {text!r}"
    return node


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and not value.startswith("[[") and value.endswith("]")


def _format(fmt: str, *args: Any) -> str:
    def one(match: re.Match[str]) -> str:
        value = args[int(match.group(1))]
        return value if isinstance(value, str) else json.dumps(value)

    return re.sub(r"\{(\d+)\}", one, fmt)


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _union(*values: Any) -> Any:
    if all(isinstance(v, dict) for v in values):
        merged: dict[str, Any] = {}
        for value in values:
            merged.update(value)
        return merged
    merged_list: list[Any] = []
    for value in values:
        merged_list += [v for v in value if v not in merged_list]
    return merged_list


def _contains(container: Any, item: Any) -> bool:
    """ARM `contains`: a value of an array, a substring of a string (both case-sensitive), or a key of an object,
    compared case-insensitively (MicrosoftDocs/azure-docs
    articles/azure-resource-manager/templates/template-functions-object.md, "contains")."""
    if isinstance(container, dict):
        return isinstance(item, str) and item.lower() in {key.lower() for key in container}
    return item in container


def _resource_id(prefix: str, type_: str, *names: str) -> str:
    namespace, *types = type_.split("/")
    assert len(types) == len(names), (type_, names)
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"{prefix}/providers/{namespace}/{path}"


class Evaluator:
    """Evaluates a template's expressions with given parameter values and stand-ins for Azure."""

    SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
    TENANT = "00000000-0000-0000-0000-0000000000aa"

    def __init__(self, parameters: dict[str, Any], variables: dict[str, Any] | None = None, *,
                 location: str = "westeurope", resource_group: str = "loadme-mgmt",
                 reference: Callable[..., Any] | None = None, list_: Callable[..., Any] | None = None) -> None:
        self.parameters = parameters
        self.variables = variables or {}
        self._variable_values: dict[str, Any] = {}
        self.location = location
        self.resource_group = resource_group
        self.reference = reference or (lambda *a: pytest_fail(f"reference{a} not expected"))
        self.list_ = list_ or (lambda *a: pytest_fail(f"list{a} not expected"))
        sub = f"/subscriptions/{self.SUBSCRIPTION}"
        rg = f"{sub}/resourceGroups/{resource_group}"
        self.functions: dict[str, Callable[..., Any]] = {
            "parameters": lambda name: self.parameters[name],
            "variables": self._variable,
            "equals": lambda a, b: a == b,
            "not": lambda a: not a,
            "and": lambda *a: all(a),
            "or": lambda *a: any(a),
            "empty": lambda v: not v,
            "contains": _contains,
            "true": lambda: True,
            "false": lambda: False,
            "createarray": lambda *items: list(items),
            "createobject": lambda *kv: dict(zip(kv[::2], kv[1::2], strict=True)),
            "json": json.loads,
            "string": _string,
            "int": int,
            "length": len,
            "format": _format,
            "concat": lambda *a: "".join(a) if all(isinstance(x, str) for x in a) else [x for v in a for x in v],
            "tolower": str.lower,
            "toupper": str.upper,
            "replace": lambda s, old, new: s.replace(old, new),
            "substring": lambda s, start, length=None: s[start:] if length is None else s[start:start + length],
            "take": lambda s, n: s[:n],
            "union": _union,
            "items": lambda o: [{"key": k, "value": v} for k, v in sorted(o.items(), key=lambda kv: kv[0].lower())],
            "uniquestring": lambda *a: hashlib.sha256("|".join(a).encode()).hexdigest()[:13],
            "guid": lambda *a: str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(a))),
            "subscription": lambda: {"id": sub, "subscriptionId": self.SUBSCRIPTION, "tenantId": self.TENANT},
            "resourcegroup": lambda: {"id": rg, "name": resource_group, "location": location},
            "deployment": lambda: {"location": location, "name": "loadme-infra"},
            "environment": lambda: {
                "suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net",
                             "acrLoginServer": ".azurecr.io"},
                "authentication": {"loginEndpoint": "https://login.microsoftonline.com/"}},
            "resourceid": self._resource_id,
            "subscriptionresourceid": lambda t, *n: _resource_id(sub, t, *n),
            "extensionresourceid": lambda scope, t, *n: _resource_id(scope, t, *n),
            "reference": lambda *a: self.reference(*a),
            "list": lambda *a: self.list_(*a),
        }

    def _variable(self, name: str) -> Any:
        if name not in self._variable_values:
            self._variable_values[name] = self.evaluate(self.variables[name])
        return self._variable_values[name]

    def _resource_id(self, *args: str) -> str:
        sub = f"/subscriptions/{self.SUBSCRIPTION}"
        if "/" in args[0]:  # resourceId(type, names...) in this resource group
            return _resource_id(f"{sub}/resourceGroups/{self.resource_group}", *args)
        return _resource_id(f"{sub}/resourceGroups/{args[0]}", *args[1:])  # resourceId(rg, type, names...)

    def run(self, node: Node, scope: dict[str, Any]) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "prop":
            return self.run(node[1], scope)[node[2]]
        if kind == "index":
            return self.run(node[1], scope)[self.run(node[2], scope)]
        name, args = node[1], node[2]
        if name == "if":  # lazy, as ARM: only the branch that applies is evaluated
            return self.run(args[1] if self.run(args[0], scope) else args[2], scope)
        if name == "lambda":
            names = [self.run(a, scope) for a in args[:-1]]
            body = args[-1]
            return lambda *values: self.run(body, {**scope, **dict(zip(names, values, strict=True))})
        if name == "lambdavariables":
            return scope[self.run(args[0], scope)]
        if name == "toobject":
            items, key_fn = self.run(args[0], scope), self.run(args[1], scope)
            value_fn = self.run(args[2], scope) if len(args) > 2 else (lambda item: item)
            return {key_fn(item): value_fn(item) for item in items}
        return self.functions[name](*[self.run(a, scope) for a in args])

    def evaluate(self, node: Any) -> Any:
        """`node` with every `[expression]` string (and key) replaced by its value."""
        if is_expression(node):
            return self.run(parse(node[1:-1]), {})
        if isinstance(node, dict):
            return {self.evaluate(k): self.evaluate(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.evaluate(v) for v in node]
        return node


def pytest_fail(message: str) -> Any:
    raise AssertionError(message)


def evaluate(node: Any, parameters: dict[str, Any], location: str = "westeurope") -> Any:
    """`node` with every `[expression]` string (and key) replaced by its value."""
    return Evaluator(parameters, location=location).evaluate(node)


def fill(template: dict[str, Any], values: dict[str, Any], location: str = "westeurope") -> dict[str, Any]:
    """Parameter values (ARM `{"name": {"value": v}}`) with the template's defaults for the rest."""
    given = {name: wrapped["value"] for name, wrapped in values.items()}
    unknown = set(given) - set(template["parameters"])
    assert not unknown, f"parameters the template does not declare: {unknown}"
    resolved: dict[str, Any] = {}
    for name, declaration in template["parameters"].items():
        if name in given:
            resolved[name] = given[name]
        else:
            assert "defaultValue" in declaration, f"parameter {name} has no value and no default"
            resolved[name] = Evaluator(resolved, location=location).evaluate(declaration["defaultValue"])
        if "allowedValues" in declaration:
            assert resolved[name] in declaration["allowedValues"], (name, resolved[name])
    return resolved
