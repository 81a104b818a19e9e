"""Declare a node's parameters from one table, with descriptors (description, ranges, read-only)."""
from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    read_only: bool = False          # True: fixed at start-up (e.g. which model is loaded)
    low: float | None = None
    high: float | None = None
    choices: tuple = ()


def declare_parameters(node: Node, table: list[Param]) -> dict:
    values = {}
    for p in table:
        desc = ParameterDescriptor(description=p.description + (f" One of: {', '.join(p.choices)}."
                                                                 if p.choices else ""),
                                   read_only=p.read_only)
        if p.low is not None and isinstance(p.default, int) and not isinstance(p.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=1)]
        elif p.low is not None and isinstance(p.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high))]
        values[p.name] = node.declare_parameter(p.name, p.default, desc).value
        if p.choices and values[p.name] not in p.choices:
            raise ValueError(f"parameter {p.name}={values[p.name]!r} must be one of {p.choices}")
    return values


def check_choices(table: list[Param], params) -> SetParametersResult:
    """For add_on_set_parameters_callback: refuse values outside a parameter's choices."""
    by_name = {p.name: p for p in table}
    for param in params:
        spec = by_name.get(param.name)
        if spec and spec.choices and param.value not in spec.choices:
            return SetParametersResult(successful=False,
                                       reason=f"{param.name} must be one of {', '.join(spec.choices)}")
    return SetParametersResult(successful=True)
