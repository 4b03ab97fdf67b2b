"""A figure of the benchmark: a ratio of two things measured side by side, its goal, and the table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    """How a figure is held against its goal."""

    AT_MOST = "≤"
    AT_LEAST = "≥"
    ABOUT = "≈"
    EXACTLY = "="


@dataclass(frozen=True)
class Goal:
    """`value <direction> target`; ABOUT allows `tolerance` either way."""

    direction: Direction
    target: float
    tolerance: float = 0.0

    def met_by(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.direction is Direction.AT_MOST:
            return value <= self.target
        if self.direction is Direction.AT_LEAST:
            return value >= self.target
        if self.direction is Direction.EXACTLY:
            return value == self.target
        return abs(value - self.target) <= self.tolerance

    def __str__(self) -> str:
        spread = f" ± {self.tolerance:g}" if self.direction is Direction.ABOUT and self.tolerance else ""
        return f"{self.direction.value} {self.target:g}{spread}"


@dataclass(frozen=True)
class Figure:
    """One row of the table: `numerator ÷ denominator`, both measured in this run."""

    name: str
    ratio: str  # what is divided by what, in words
    numerator: float
    denominator: float
    goal: Goal
    measured: str  # the two sides with their units, for the reader

    @property
    def value(self) -> float:
        return self.numerator / self.denominator if self.denominator else math.nan

    @property
    def met(self) -> bool:
        return self.goal.met_by(self.value)


def format_value(value: float) -> str:
    """A ratio with three significant figures (0 stays 0)."""
    if math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def markdown_table(figures: list[Figure]) -> str:
    """The figures as a Markdown table (also what `make bench` prints)."""
    lines = ["| figure | ratio | value | goal | met | measured |", "|---|---|---|---|---|---|"]
    for figure in figures:
        lines.append(f"| {figure.name} | {figure.ratio} | **{format_value(figure.value)}** | {figure.goal} | "
                     f"{'yes' if figure.met else 'no'} | {figure.measured} |")
    return "\n".join(lines)
