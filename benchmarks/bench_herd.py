"""Thundering-herd benchmark of the C driver (issue 12): builds benchmarks/herd.c and runs it.

    python benchmarks/bench_herd.py [--runs 3] [--tx 20000] [--sim] [N ...]

N threads (default 1 8 32 128 480) share one handle and do register reads against a card in
another process: the fake card herd.c forks, or with --sim `python -m firmware_sim --spans 16
--line E1`. For each N: the host process's CPU time and context switches per transaction,
medians over the runs, beside the 1-thread figures of the same runs. Target: CPU per
transaction at 480 threads within 2x of 1 thread.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["frame.c", "link.c", "device.c", "cause.c", "errors.c", "pool.c"]


def build(out: Path, extra: list[str]) -> Path:
    cc = shutil.which(os.environ.get("CC", "gcc")) or "gcc"
    exe = out / "herd"
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-pthread", *extra,
         f"-I{ROOT / 'cdriver'}", str(ROOT / "benchmarks" / "herd.c"),
         *(str(ROOT / "cdriver" / s) for s in SOURCES), "-o", str(exe)],
        check=True,
    )
    return exe


Figures = dict[int, tuple[float, float]]


def run(exe: Path, tx: int, counts: list[str], device: str | None) -> Figures:
    """{threads: (cpu us/tx, context switches/tx)} from one run of the program."""
    args = [str(exe), "-t", str(tx), *(["-d", device] if device else []), *counts]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=600).stdout
    figures = {}
    for line in out.splitlines()[1:]:
        threads, _, cpu, _, cs, _, failures = line.split()
        if int(failures):
            raise SystemExit(f"herd: {failures} failed transactions at {threads} threads")
        figures[int(threads)] = (float(cpu), float(cs))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tx", type=int, default=20000, help="transactions per thread count")
    parser.add_argument("--sim", action="store_true", help="against firmware_sim, not the fake")
    parser.add_argument("counts", nargs="*", default=["1", "8", "32", "128", "480"])
    args = parser.parse_args()
    if args.counts[0] != "1":
        args.counts.insert(0, "1")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp), [])
        sim = None
        device = None
        if args.sim:
            device = str(Path(tmp) / "tcard")
            sim = subprocess.Popen(
                [sys.executable, "-m", "firmware_sim", "--spans", "16", "--line", "E1",
                 "--link", device],
                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            assert sim.stdout is not None
            sim.stdout.readline()
        try:
            runs = [run(exe, args.tx, args.counts, device) for _ in range(args.runs)]
        finally:
            if sim is not None:
                sim.terminate()
                sim.wait(10)
    card = "firmware_sim, 16 E1 spans" if args.sim else "the forked fake card"
    print(f"register reads against {card}; medians of {args.runs} runs of {args.tx} transactions")
    print(f"{'threads':>7} {'cpu us/tx':>10} {'x 1 thread':>11} {'ctxsw/tx':>9} {'x 1 thread':>11}")
    base = [r[1] for r in runs]
    for n in (int(c) for c in args.counts):
        cpu = statistics.median(r[n][0] for r in runs)
        cs = statistics.median(r[n][1] for r in runs)
        cpu_x = statistics.median(r[n][0] / b[0] for r, b in zip(runs, base, strict=True))
        cs_x = statistics.median(r[n][1] / b[1] for r, b in zip(runs, base, strict=True))
        print(f"{n:>7} {cpu:>10.2f} {cpu_x:>11.2f} {cs:>9.2f} {cs_x:>11.2f}")
    last = int(args.counts[-1])
    worst = statistics.median(r[last][0] / b[0] for r, b in zip(runs, base, strict=True))
    print(f"target: CPU/tx at {args.counts[-1]} threads <= 2x 1 thread: "
          f"{'MET' if worst <= 2 else 'NOT MET'} ({worst:.2f}x)")


if __name__ == "__main__":
    main()
