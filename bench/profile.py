"""Summaries of py-spy ``--format raw`` output (collapsed stacks: ``frame;frame;... count``)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def _name(frame: str, keep_lines: tuple[str, ...] = ()) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    short = "/".join(path.split("/")[-2:])
    if any(part in short for part in keep_lines):
        line = frame.strip().rsplit(":", 1)[-1].rstrip(")")
        return f"{match['func']} ({short}:{line})"
    return f"{match['func']} ({short})"


def summarise(path: Path, *, top: int = 15, keep_lines: tuple[str, ...] = ()) -> dict[str, list[tuple[str, float]]]:
    """Inclusive and self (leaf) share of samples per function, in percent, biggest first."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame, keep_lines) for frame in stack.split(";") if frame]
        # py-spy prefixes the thread ("process 123:\"python ...\";thread (0x...)"): keep code frames.
        frames = [f for f in frames if "(" in f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        leaf[frames[-1]] += count
    if not total:
        return {"inclusive": [], "self": []}
    return {
        "inclusive": [(name, round(100 * n / total, 1)) for name, n in inclusive.most_common(top)],
        "self": [(name, round(100 * n / total, 1)) for name, n in leaf.most_common(top)],
        "samples": [("total", float(total))],
    }


def render(summary: dict[str, list[tuple[str, float]]]) -> str:
    lines = []
    for kind in ("inclusive", "self"):
        lines.append(f"  {kind} % of samples:")
        lines += [f"    {share:5.1f}  {name}" for name, share in summary.get(kind, [])]
    return "\n".join(lines)
