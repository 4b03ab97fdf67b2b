"""A small evaluator of the ARM template expressions `templates/` uses, to fill a template's
parameters in tests: string literals, numbers, function calls, `.property` access."""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(-?\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(\()|(\))|(,)|(\.))")


class _Parser:
    def __init__(self, text: str, functions: dict[str, Any]) -> None:
        self.tokens = [m for m in _TOKEN.finditer(text) if m.group(0).strip()]
        self.pos = 0
        self.functions = functions

    def _peek(self) -> str:
        return self.tokens[self.pos].group(0).strip() if self.pos < len(self.tokens) else ""

    def _next(self) -> re.Match[str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expression(self) -> Any:
        token = self._next()
        literal, number, name = token.group(1), token.group(2), token.group(3)
        if literal is not None:
            value: Any = literal[1:-1].replace("''", "'")
        elif number is not None:
            value = json.loads(number)
        elif name is not None:
            assert self._next().group(0).strip() == "(", f"call expected after {name}"
            args = []
            while self._peek() != ")":
                args.append(self.expression())
                if self._peek() == ",":
                    self._next()
            self._next()
            value = self.functions[name.lower()](*args)
        else:
            raise ValueError(f"unexpected token {token.group(0)!r}")
        while self._peek() == ".":
            self._next()
            value = value[self._next().group(3)]
        return value


def evaluate(node: Any, parameters: dict[str, Any], location: str = "westeurope") -> Any:
    """`node` with every `[expression]` string (and key) replaced by its value."""
    functions = {
        "parameters": lambda name: parameters[name],
        "if": lambda cond, a, b: a if cond else b,
        "equals": lambda a, b: a == b,
        "createarray": lambda *items: list(items),
        "createobject": lambda *kv: dict(zip(kv[::2], kv[1::2], strict=True)),
        "json": json.loads,
        "resourcegroup": lambda: {"location": location},
    }
    if isinstance(node, str) and node.startswith("[") and not node.startswith("[["):
        return _Parser(node[1:-1], functions).expression()
    if isinstance(node, dict):
        return {evaluate(k, parameters, location): evaluate(v, parameters, location) for k, v in node.items()}
    if isinstance(node, list):
        return [evaluate(v, parameters, location) for v in node]
    return node


def fill(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
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
            resolved[name] = evaluate(declaration["defaultValue"], resolved)
        if "allowedValues" in declaration:
            assert resolved[name] in declaration["allowedValues"], (name, resolved[name])
    return resolved
