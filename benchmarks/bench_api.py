"""telecard API benchmarks (issue 4, section 8), each figure printed beside its target.

    PYTHONPATH=pyapi:. python benchmarks/bench_api.py [--reps N] [--seconds S]

1. Clear latency: from the network emulator clearing a ringing call to the `call()` waiting
   on it returning (median, p99), beside the pty floor of the same run (one 4-byte register
   read through the driver, the smallest round trip the event path is built from).
   Targets: median <= 500 us, p99 <= 5 ms. The simulated card runs in its own process, as
   hardware would, and stamps the moment its network clears with the system-wide
   CLOCK_MONOTONIC (time.perf_counter) that this process reads when call() returns.
2. Call attempts per second through the API with all 480 channels of a 16-span E1 card in
   use, a thread per channel (target >= 1,000/s). The card runs in a separate process, as
   hardware would; its network refuses every call at once (unallocated number).
3. RSS of this process with a Card on those 480 channels open (target <= 100 MB).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

from firmware_sim.demo_plan import simulated_card
from firmware_sim.network import NoAnswer
from telecard import Card, State
from telecard._cdriver import lib


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} us"


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def serve_card() -> None:
    """Child process: a simulated card; each stdin line "clear" clears span 0 channel 1 from
    the network and answers with the perf_counter value at that moment."""
    with simulated_card() as sim:
        sim.network.route("4000", NoAnswer())
        print(sim.device_path, flush=True)
        for _line in sys.stdin:
            t0 = time.perf_counter()
            sim.network.clear(0, 1)
            print(repr(t0), flush=True)


def clear_latency(reps: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-card"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        path = proc.stdout.readline().strip()
        with Card.open(path) as card:
            channel = card.channel(0, 1)
            floor = []
            for _ in range(reps):
                t0 = time.perf_counter()
                card.device.read(lib.TC_REG_MAGIC, 4)
                floor.append(time.perf_counter() - t0)
            latencies = []
            for _ in range(reps):
                returned: list[float] = []

                def caller(out: list[float]) -> None:
                    channel.call("4000", seconds_timeout=10)
                    out.append(time.perf_counter())

                thread = threading.Thread(target=caller, args=(returned,))
                thread.start()
                while channel.state() is not State.RING_OUTGOING:
                    time.sleep(0.0005)
                time.sleep(0.002)  # let the card and the event thread go quiet
                proc.stdin.write("clear\n")
                proc.stdin.flush()
                t0 = float(proc.stdout.readline())
                thread.join(10)
                latencies.append(returned[0] - t0)
    finally:
        proc.stdin.close()
        proc.wait(10)
    med, p99 = statistics.median(latencies), pct(latencies, 0.99)
    print(f"network clears -> call() returns ({reps} calls)")
    print(f"  median {us(med)}   target <= 500 us   {verdict(med <= 500e-6)}")
    print(f"  p99    {us(p99)}   target <= 5 ms     {verdict(p99 <= 5e-3)}")
    print(f"  pty floor (4-byte register read): median {us(statistics.median(floor))},"
          f" p99 {us(pct(floor, 0.99))}")


def start_card_process(spans: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--spans", str(spans)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def throughput_and_rss(seconds: float) -> None:
    proc, path = start_card_process(16)
    try:
        before = rss_mb()
        with Card.open(path) as card:
            channels = card.channels()
            deadline = time.monotonic() + 5
            while not all(s.dchannel_up for s in card.spans) and time.monotonic() < deadline:
                time.sleep(0.01)
            rss_open = rss_mb()
            counts = [0] * len(channels)
            errors: list[BaseException] = []
            start = threading.Event()
            stop = threading.Event()

            def worker(i: int) -> None:
                channel = channels[i]
                start.wait()
                try:
                    while not stop.is_set():
                        channel.call("9999", seconds_timeout=10)
                        counts[i] += 1
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(channels))]
            for t in threads:
                t.start()
            t0 = time.perf_counter()
            start.set()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join(30)
            elapsed = time.perf_counter() - t0
            rss_busy = rss_mb()
        rate = sum(counts) / elapsed
        print(f"call attempts/s, {len(channels)} channels in use, a thread each ({elapsed:.1f} s)")
        print(f"  {rate:8.0f} /s        target >= 1,000/s  {verdict(rate >= 1000)}")
        print(f"  channels that completed calls: {sum(1 for c in counts if c)} of {len(counts)};"
              f" errors: {len(errors)} {errors[:1]!r}")
        print(f"RSS with {len(channels)} channels open")
        print(f"  {rss_open:8.1f} MB open, {rss_busy:.1f} MB after the run (interpreter alone"
              f" {before:.1f} MB)   target <= 100 MB  {verdict(max(rss_open, rss_busy) <= 100)}")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=300, help="calls for the latency figure")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput run length")
    parser.add_argument("--serve-card", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_card:
        serve_card()
        return
    print(f"telecard API benchmarks (pid {os.getpid()}, Python {sys.version.split()[0]})")
    clear_latency(args.reps)
    throughput_and_rss(args.seconds)


if __name__ == "__main__":
    main()
