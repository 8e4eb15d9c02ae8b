"""Reading infra/ without the Bicep compiler: pycep-parser parse trees and a small evaluator over them.

pycep renders an identifier and a string literal alike (both are plain strings): `evaluate` resolves a string
that names a parameter or variable in its scope (or a stubbed access chain such as `module.outputs.x`), fills in
`${name}` interpolations, and takes any other string literally.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def tree(relative: str) -> dict[str, Any]:
    """The pycep parse tree of infra/<relative>."""
    return cast(dict[str, Any], _parser().parse(file_path=INFRA / relative))


def unwrap(value: Any) -> Any:
    """Strip pycep's loop (`[for ...]`) and condition (`if (...)`) wrappers off a declaration body."""
    while isinstance(value, dict) and "config" in value and ("loop_type" in value or "condition" in value):
        value = value["config"]
    return value


def resources(relative: str, type_: str) -> dict[str, dict[str, Any]]:
    """Resources of one type in a file: symbolic name -> body (loop/condition unwrapped)."""
    found = {}
    for name, decl in tree(relative).get("resources", {}).items():
        if decl["type"] == type_:
            found[name] = unwrap(decl["config"])
    return found


def the_resource(relative: str, type_: str) -> Any:
    found = resources(relative, type_)
    assert len(found) == 1, f"{relative}: expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def variable(relative: str, name: str) -> Any:
    variables = tree(relative).get("variables", {})
    assert name in variables, f"{relative}: no variable {name!r}"
    return variables[name]["value"]


def module(relative: str, name: str) -> Any:
    modules = tree(relative).get("modules", {})
    assert name in modules, f"{relative}: no module {name!r}"
    return modules[name]


def render(expr: Any) -> str | None:
    """Render an access chain (a.b[c].d) or a plain identifier/string; None for anything else."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr:
        kind, operands = expr["operator"]["type"], expr["operator"]["operands"]
        left, right = render(operands.get("operand_1")), render(operands.get("operand_2"))
        if left is not None and right is not None:
            if kind == "property_accessor":
                return f"{left}.{right}"
            if kind == "index_accessor":
                return f"{left}[{right}]"
    return None


def function(expr: Any, type_: str) -> Any:
    assert isinstance(expr, dict) and "function" in expr, f"expected a {type_}() call, got {expr!r}"
    call = expr["function"]
    assert call["type"] == type_, f"expected {type_}(), got {call['type']}()"
    return call


def key(name: str) -> str:
    """Object keys keep their quotes in pycep when they are quoted in Bicep."""
    return name.strip("'")


def walk(value: Any) -> Iterator[Any]:
    """Every value nested in a parse-tree fragment, the fragment included."""
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from walk(child)


def description(decl: dict[str, Any]) -> str:
    for decorator in decl.get("decorators", []):
        if decorator["type"] == "description":
            return str(decorator["argument"]).strip()
    return ""


def scope(relative: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Names `evaluate` resolves in a file: the given parameter values (else the defaults) and the variables."""
    parsed = tree(relative)
    names: dict[str, Any] = {name: decl.get("default") for name, decl in parsed.get("parameters", {}).items()}
    names.update(params)
    for name, decl in parsed.get("variables", {}).items():
        names.setdefault(name, _Variable(decl["value"]))
    return names


class _Variable:
    """A variable's expression, evaluated when it is used."""

    def __init__(self, expr: Any) -> None:
        self.expr = expr


_INTERPOLATION = re.compile(r"\$\{([^{}]+)\}")


def evaluate(expr: Any, names: Mapping[str, Any]) -> Any:
    """The value of a pycep expression built from literals, names and the operators/functions the tests need."""
    if isinstance(expr, str):
        if expr in names:
            value = names[expr]
            return evaluate(value.expr, names) if isinstance(value, _Variable) else value
        return _INTERPOLATION.sub(lambda match: str(evaluate(_known(match.group(1), names), names)), expr)
    if isinstance(expr, list):
        return [evaluate(item, names) for item in expr]
    if not isinstance(expr, dict):
        return expr
    if (chain := render(expr)) in names:
        return evaluate(chain, names)
    if "operator" in expr:
        kind, operands = expr["operator"]["type"], expr["operator"]["operands"]
        if kind == "conditional":
            branch = "true_value" if evaluate(operands["condition"], names) else "false_value"
            return evaluate(operands[branch], names)
        if kind == "not":
            return not evaluate(operands["bool_value"], names)
        left, right = evaluate(operands.get("operand_1"), names), evaluate(operands.get("operand_2"), names)
        binary: dict[str, Callable[[], Any]] = {
            "and": lambda: left and right,
            "or": lambda: left or right,
            "equals": lambda: left == right,
            "property_accessor": lambda: left[right],
            "index_accessor": lambda: left[right],
        }
        assert kind in binary, f"evaluate: operator {kind} is not supported"
        return binary[kind]()
    if "function" in expr:
        call = expr["function"]
        args = [evaluate(value, names) for value in call["parameters"].values()]
        functions: dict[str, Callable[[], Any]] = {
            "concat": lambda: [item for arg in args for item in arg],
            "empty": lambda: not args[0],
            "contains": lambda: args[1] in args[0],
            "union": lambda: {k: v for arg in args for k, v in arg.items()},
            "take": lambda: args[0][: args[1]],
        }
        assert call["type"] in functions, f"evaluate: {call['type']}() is not supported"
        return functions[call["type"]]()
    return {key(name): evaluate(value, names) for name, value in expr.items()}


def _known(name: str, names: Mapping[str, Any]) -> str:
    assert name.strip() in names, f"evaluate: cannot resolve ${{{name}}}"
    return name.strip()
