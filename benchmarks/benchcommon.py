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


def rss_mb(pid: int | str = "self") -> float:
    """VmRSS of process `pid` (this one by default), in MB (MiB)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclasses.dataclass(frozen=True)
class CardProcess:
    """A simulated card in a process of its own."""

    link: str  # the --link path to open
    pid: int

    def cpu(self) -> float:
        """The process's CPU time so far, user + system, in seconds (clock ticks)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def card_process(spans: int, *extra: str, demo_plan: bool = False) -> Iterator[CardProcess]:
    """`python -m firmware_sim --spans N --line E1 --link PATH EXTRA... [--demo-plan]` in its
    own process."""
    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "tcard")
        cmd = [sys.executable, "-m", "firmware_sim", "--spans", str(spans), "--line", "E1",
               "--link", link, *extra]
        if demo_plan:
            cmd.append("--demo-plan")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            if not proc.stdout.readline():
                raise RuntimeError("python -m firmware_sim ended before printing its device")
            yield CardProcess(link, proc.pid)
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
