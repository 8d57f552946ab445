"""The 30-day chart of joins and opt-outs as SVG geometry (pure: the template draws it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

WIDTH = 640
HEIGHT = 200
LEFT = 36  # room for the axis labels
RIGHT = 24  # room for the last day's label
BOTTOM = 24
TOP = 8


@dataclass(frozen=True)
class Bar:
    """One bar: where it is drawn and what it says."""

    x: float
    y: float
    width: float
    height: float
    kind: str  # "joins" | "optouts"
    value: int
    day: date


@dataclass(frozen=True)
class Chart:
    """Everything the template needs to draw the chart."""

    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, int]]  # (y, value) of the horizontal grid lines
    labels: list[tuple[float, str]]  # (x, text) of the day labels under the bars
    baseline: float
    left: int
    right: int
    total_joins: int
    total_optouts: int


def _scale_top(peak: int) -> int:
    # A round number at or above the peak, so the grid lines read 0, ¼, ½, ¾, all.
    for step in (4, 8, 12, 20, 40, 60, 100, 200, 400, 1000, 2000, 4000, 10_000):
        if peak <= step:
            return step
    return ((peak + 9999) // 10_000) * 10_000


def build(days: list[tuple[date, int, int]]) -> Chart:
    """Two bars a day (joins, opt-outs) on a shared scale, with four grid lines and a label every week."""
    top = _scale_top(max([max(j, o) for _d, j, o in days] + [1]))
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = float(HEIGHT - BOTTOM)
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    bar_width = max(slot / 2 - 1, 1.0)
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for index, (day, joins, optouts) in enumerate(days):
        x = LEFT + index * slot
        for offset, kind, value in ((0.0, "joins", joins), (bar_width, "optouts", optouts)):
            height = plot_height * value / top
            bars.append(Bar(round(x + offset, 2), round(baseline - height, 2), round(bar_width, 2), round(height, 2),
                            kind, value, day))
        if (len(days) - 1 - index) % 7 == 0:
            labels.append((round(x + slot / 2, 2), day.strftime("%b %d")))
    ticks = [(round(baseline - plot_height * i / 4, 2), top * i // 4) for i in range(5)]
    return Chart(WIDTH, HEIGHT, bars, ticks, labels, baseline, LEFT, WIDTH - RIGHT,
                 sum(j for _d, j, _o in days), sum(o for _d, _j, o in days))
