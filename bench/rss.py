"""Peak memory of components: a thread samples /proc every 200 ms.

For each watched process it records the peak of the summed VmRSS of the process and all its
descendants (a Python driver and its JVM, say), and the process's own VmHWM (the kernel's exact
peak for that one process).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
KIB = 1024


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        try:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (IndexError, ValueError):
            continue
    return children


def tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


@dataclass
class Peak:
    tree_rss_kib: int = 0
    hwm_kib: int = 0
    processes: int = 0
    samples: int = 0

    @property
    def tree_rss_mib(self) -> float:
        return self.tree_rss_kib / KIB

    @property
    def hwm_mib(self) -> float:
        return self.hwm_kib / KIB


class RssTracker:
    """Watches pids under component names; the peak per name spans every run of that name."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self._interval = interval_s
        self._watched: dict[int, str] = {}
        self.peaks: dict[str, Peak] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._watched[pid] = name
            self.peaks.setdefault(name, Peak())
        self.sample()

    def unwatch(self, pid: int) -> None:
        """Take a last sample and stop following ``pid``; call before stopping the process."""
        self.sample()
        with self._lock:
            self._watched.pop(pid, None)

    def sample(self) -> None:
        with self._lock:
            watched = dict(self._watched)
        if not watched:
            return
        children = _children_map()
        for pid, name in watched.items():
            pids = tree(pid, children)
            total = sum(_status_kib(p, "VmRSS") or 0 for p in pids)
            hwm = _status_kib(pid, "VmHWM") or 0
            with self._lock:
                peak = self.peaks[name]
                peak.samples += 1
                if total > peak.tree_rss_kib:
                    peak.tree_rss_kib = total
                    peak.processes = len(pids)
                peak.hwm_kib = max(peak.hwm_kib, hwm)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()
