"""Arithmetic from speech, parsed by Python's own ``ast`` and never evaluated as code."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from livekit.agents import ToolError, function_tool

from .guard import guarded

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
}
CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 1000
MAX_LENGTH = 200


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression; ValueError for anything that is not arithmetic."""
    if len(expression) > MAX_LENGTH:
        raise ValueError("the expression is too long")
    try:
        tree = ast.parse(
            expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval"
        )
    except SyntaxError:
        raise ValueError(f"{expression!r} is not arithmetic") from None
    return float(_value(tree.body))


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("the exponent is too large")
        return BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_value(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and not node.keywords
    ):
        return FUNCTIONS[node.func.id](*(_value(a) for a in node.args))
    raise ValueError("only numbers, + - * / ** %, parentheses and math functions are allowed")


@function_tool
@guarded()
async def calculate(expression: str) -> str:
    """Work out an arithmetic expression exactly, instead of guessing.

    Args:
        expression: Arithmetic such as "(12.5 * 4) / 3" or "sqrt(2) ^ 2"; numbers, + - * / ^ %,
            parentheses and sqrt, abs, round, sin, cos, tan, log, log10, exp, pi, e.
    """
    try:
        result = evaluate(expression)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError) as e:
        raise ToolError(f"Cannot calculate that: {e}") from None
    return f"That makes {result:,.10g}."  # read aloud as it is: no symbols to spell out
