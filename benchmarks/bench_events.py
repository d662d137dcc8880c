"""Event loss under many application threads (issue 12), closed loop through the Card API.

    PYTHONPATH=pyapi:. python benchmarks/bench_events.py [--seconds S] [--threads 8,480]

The simulated card runs standalone in another process (16 E1 spans, demo plan). Each of N
threads owns one channel and loops `call("3301")` (busy). Per run: calls/s, the events the
card dropped (RING_DROPPED), the posted events the driver could not queue (events_dropped),
the deepest its queue got since the card was opened, the drains that reported an overflow
(each one a re-read of every channel) and the CPU time each process spent per call.
Baselines in the same run: 8 threads for 480, and the host acknowledging RING_TAIL itself
(posting without AUTO_ACK, as before issue 12) for AUTO_ACK.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Any

from telecard import Card
from telecard._cdriver import lib


def start_card(link: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--spans", "16", "--line", "E1", "--link", link,
         "--demo-plan"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ring_dropped(card: Card) -> int:
    return int.from_bytes(card.device.read(lib.TC_RING_DROPPED, 4), "little")


def count_overflows(card: Card) -> list[int]:
    """Wrap the card's Device.drain_events to count the drains that report an overflow."""
    dev = card.device
    drain = dev.drain_events
    counter = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        events, overflow = drain(*args, **kwargs)
        counter[0] += overflow
        return events, overflow

    dev.drain_events = counting  # type: ignore[method-assign]
    return counter


def run(
    card: Card, card_pid: int, threads: int, seconds: float, overflows: list[int]
) -> dict[str, Any]:
    channels = card.channels()[:threads]
    counts = [0] * len(channels)
    errors: list[BaseException] = []
    stop = threading.Event()
    start = threading.Barrier(len(channels) + 1)

    def worker(i: int) -> None:
        ch = card.channel(channels[i].span, channels[i].number)
        start.wait()
        try:
            while not stop.is_set():
                ch.call("3301")
                counts[i] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    stats0 = card.device.stats
    dropped0, over0 = ring_dropped(card), overflows[0]
    cpu0 = (cpu_seconds(card_pid), cpu_seconds(os.getpid()))
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(len(channels))]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join(60)
    elapsed = time.perf_counter() - t0
    stats1 = card.device.stats
    calls = max(1, sum(counts))
    return {
        "card cpu": (cpu_seconds(card_pid) - cpu0[0]) / calls,
        "host cpu": (cpu_seconds(os.getpid()) - cpu0[1]) / calls,
        "calls/s": sum(counts) / elapsed,
        "RING_DROPPED": ring_dropped(card) - dropped0,
        "host drops": stats1.events_dropped - stats0.events_dropped,
        "queue peak": stats1.event_queue_peak,
        "overflows": overflows[0] - over0,
        "errors": len(errors),
        "error": repr(errors[0]) if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--threads", default="8,480", help="thread counts, comma-separated")
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")]
    link = f"/tmp/bench_events.{os.getpid()}"
    proc, path = start_card(link)
    print(f"telecard event-loss benchmark (pid {os.getpid()}, card {path}, {args.seconds:.0f} s"
          " a run)")
    try:
        with Card.open(link) as card:
            deadline = time.monotonic() + 10
            while not all(s.dchannel_up for s in card.spans) and time.monotonic() < deadline:
                time.sleep(0.01)
            overflows = count_overflows(card)
            for n in counts:
                for name, auto_ack in (("auto-ack", True), ("host-ack", False)):
                    card.device.set_event_post(True, auto_ack=auto_ack)
                    r = run(card, proc.pid, n, args.seconds, overflows)
                    print(f"  {n:4} threads {name}: {r['calls/s']:5.0f} calls/s,"
                          f" RING_DROPPED +{r['RING_DROPPED']}, host drops +{r['host drops']},"
                          f" queue peak {r['queue peak']}, overflow drains {r['overflows']},"
                          f" CPU per call: card {r['card cpu'] * 1e6:.0f} us,"
                          f" host {r['host cpu'] * 1e6:.0f} us,"
                          f" errors {r['errors']} {r['error']}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
