"""Shared by the benchmark scripts: percentiles, the simulated card and the C pty echo as
processes of their own, and the link counters printed beside each figure."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telecard.device import LinkStats

HERE = Path(__file__).resolve().parent
# Counters that grow with the traffic itself; every other LinkStats field counts trouble.
_TRAFFIC = {"frames_tx", "frames_rx", "irqs", "event_frames"}


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} us"


def link_trouble(before: LinkStats, after: LinkStats) -> str:
    """Retries and timeouts between two LinkStats, and any other trouble counter that moved."""
    moved = {
        f.name: getattr(after, f.name) - getattr(before, f.name)
        for f in dataclasses.fields(after)
        if f.name not in _TRAFFIC
    }
    shown = [f"retries {moved.pop('retries')}", f"timeouts {moved.pop('timeouts')}"]
    shown += [f"{name} {n}" for name, n in moved.items() if n]
    return ", ".join(shown)


def cpu_ticks() -> tuple[int, int, int]:
    """(all, idle, stolen) CPU time of the machine since boot, in ticks, from /proc/stat (idle
    counts iowait too): a virtual machine's host running others' work shows as steal, which no
    figure here controls."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    return sum(fields), fields[3] + fields[4], fields[7]


def stolen(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """The share (0-1) of the machine's CPU time the host took between two cpu_ticks()."""
    total = after[0] - before[0]
    return (after[2] - before[2]) / total if total else 0.0


def machine_shares(before: tuple[int, int, int], after: tuple[int, int, int]) -> str:
    """The host's steal and the machine's idle time between two cpu_ticks(), as percentages
    of all its CPU time."""
    idle = (after[1] - before[1]) / ((after[0] - before[0]) or 1)
    return f"host steal {100 * stolen(before, after):.0f} %, idle {100 * idle:.0f} %"


@contextmanager
def card_process(spans: int, *, demo_plan: bool = False) -> Iterator[str]:
    """`python -m firmware_sim` in its own process; yields the --link path to open."""
    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "tcard")
        cmd = [sys.executable, "-m", "firmware_sim", "--spans", str(spans), "--line", "E1",
               "--link", link]
        if demo_plan:
            cmd.append("--demo-plan")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            if not proc.stdout.readline():
                raise RuntimeError("python -m firmware_sim ended before printing its device")
            yield link
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def pty_echo_process() -> Iterator[str]:
    """benchmarks/pty_echo.c, built with the system C compiler, in its own process; yields the
    pty slave path it echoes on."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the pty echo floor needs a C compiler (cc)")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "pty_echo")
        subprocess.run([cc, "-O2", "-o", exe, str(HERE / "pty_echo.c")], check=True)
        proc = subprocess.Popen([exe], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            path = proc.stdout.readline().strip()
            if not path:
                raise RuntimeError("pty_echo ended before printing its pty")
            yield path
        finally:
            proc.terminate()
            proc.wait(10)
