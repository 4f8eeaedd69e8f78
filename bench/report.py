"""Result rows, the per-benchmark tables printed to the terminal, and bench/results/latest.{json,md}."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One measured figure, next to its baseline (measured in the same run unless said otherwise)."""

    benchmark: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    met: bool | None = None  # None: informational, no target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline or math.isnan(self.baseline) or math.isnan(self.value):
            return None
        return self.value / self.baseline


@dataclass
class Report:
    quick: bool
    started: float = field(default_factory=time.time)
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(row: Row) -> str:
    return {True: "MET", False: "MISSED", None: "-"}[row.met]


HEADER = ("metric", "value", "unit", "baseline", "baseline is", "ratio", "target", "verdict", "note")


def _cells(row: Row) -> tuple[str, ...]:
    ratio = row.ratio
    return (row.metric, _fmt(row.value), row.unit, _fmt(row.baseline), row.baseline_label,
            f"{ratio:.2f}x" if ratio is not None else "", row.target, _verdict(row), row.note)


def table(rows: list[Row]) -> str:
    """A plain-text table (fixed-width columns)."""
    cells = [HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = ["  ".join(text.ljust(widths[i]) for i, text in enumerate(line)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(report: Report) -> str:
    out = [f"# candlestack benchmarks ({'quick' if report.quick else 'full'} run)", "",
           f"Run at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(report.started))} on "
           f"{platform.node()} ({_cpu_count()} cores). Ratios are against baselines measured in the same run.", ""]
    for benchmark in dict.fromkeys(row.benchmark for row in report.rows):
        out += [f"## {benchmark}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in _cells(row)) + " |"
                for row in report.rows if row.benchmark == benchmark]
        out.append("")
    if report.errors:
        out += ["## errors", ""] + [f"- **{name}**: {text}" for name, text in report.errors.items()] + [""]
    return "\n".join(out)


def _cpu_count() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 0


def write(report: Report, directory: Path = RESULTS) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        "quick": report.quick,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.started)),
        "seconds": round(time.time() - report.started, 1),
        "rows": [{**asdict(row), "ratio": row.ratio, "verdict": _verdict(row)} for row in report.rows],
        "details": report.details,
        "errors": report.errors,
    }
    json_path, md_path = directory / "latest.json", directory / "latest.md"
    json_path.write_text(json.dumps(body, indent=2, default=str, allow_nan=True) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
