"""Call attempts per second: the simulator's Q.931/Q.921 stack against libpri back to back.

Simulator: 16 E1 spans (480 channels) of a TE card cabled to the network emulator on one
asyncio loop; every channel keeps a call attempt in flight: SETUP, CALL PROCEEDING,
DISCONNECT (cause 17), RELEASE, RELEASE COMPLETE, with the LAPD acknowledgements.
libpri: 16 pairs of libpri instances (CPE and network) on socketpairs in one C program
(tests/peers/libpri_b2b.c), same call pattern, measured in the same run.

--clear-latency: one span on a loop thread; for each answered call, the time from
NetworkEmulator.clear() on the main thread to the sink seeing EV_CLEARED (DISCONNECT, RELEASE,
RELEASE COMPLETE and their LAPD acknowledgements), median and p99.
Run: python benchmarks/bench_signalling.py [--seconds 5] [--clear-latency [--calls 3000]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_sim.callcontrol import CardSignalling  # noqa: E402
from firmware_sim.isdn import build_span_signalling  # noqa: E402
from firmware_sim.network import Answer, Busy, NetworkEmulator  # noqa: E402
from firmware_sim.regmap import (  # noqa: E402
    CMD_MAKE_CALL,
    EV_CLEARED,
    LINE_E1,
    MB_DONE,
    ROLE_TE,
    ST_ACTIVE,
    bearer_timeslots,
)

SPANS = 16
B2B_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "peers" / "libpri_b2b.c"


class _DialingSink:
    """Firmware stand-in: re-dials every channel as soon as its call clears."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.spans: list[CardSignalling] = []
        self.attempts = 0
        self.cleared = 0
        self.links_up = 0
        self.bad_causes = 0

    def channel_update(self, span: int, timeslot: int, *, state: int | None = None,
                       direction: int | None = None, call_ref: int | None = None,
                       called: str | None = None, calling: str | None = None,
                       cause: bytes | None = None, cause_source: int | None = None,
                       event: int | None = None) -> None:
        if event == EV_CLEARED:
            self.cleared += 1
            if cause != b"\x84\x91":
                self.bad_causes += 1
            self.loop.call_soon(self.dial, span, timeslot)

    def span_update(self, span: int, *, dchannel_up: bool | None = None,
                    alarms: int | None = None) -> None:
        if dchannel_up:
            self.links_up += 1

    def dial(self, span: int, timeslot: int) -> None:
        if self.spans[span].command(timeslot, CMD_MAKE_CALL, "200", "100", b"") == 2:
            self.attempts += 1


def bench_simulator(seconds: float) -> tuple[float, int]:
    loop = asyncio.new_event_loop()
    sink = _DialingSink(loop)
    network = NetworkEmulator(keep_history=False)
    network.route("200", Busy("proceeding"))
    sink.spans = [build_span_signalling(loop, sink, s, LINE_E1, ROLE_TE, network=network)
                  for s in range(SPANS)]
    for sig in sink.spans:
        sig.start()

    async def run() -> tuple[float, int]:
        while sink.links_up < SPANS:
            await asyncio.sleep(0.01)
        for s in range(SPANS):
            for ts in bearer_timeslots(LINE_E1):
                sink.dial(s, ts)
        await asyncio.sleep(0.5)  # warm up
        c0, t0 = sink.cleared, time.perf_counter()
        await asyncio.sleep(seconds)
        return (sink.cleared - c0) / (time.perf_counter() - t0), sink.bad_causes

    try:
        return loop.run_until_complete(run())
    finally:
        for sig in sink.spans:
            sig.stop()
        loop.close()


class _ClearTimingSink:
    """Firmware stand-in that timestamps EV_CLEARED (on the loop thread) and wakes the caller."""

    def __init__(self) -> None:
        self.active = threading.Event()
        self.cleared = threading.Event()
        self.link = threading.Event()
        self.cleared_at = 0.0

    def channel_update(self, span: int, timeslot: int, *, state: int | None = None,
                       direction: int | None = None, call_ref: int | None = None,
                       called: str | None = None, calling: str | None = None,
                       cause: bytes | None = None, cause_source: int | None = None,
                       event: int | None = None) -> None:
        if event == EV_CLEARED:
            self.cleared_at = time.perf_counter()
            self.cleared.set()
        elif state == ST_ACTIVE:
            self.active.set()

    def span_update(self, span: int, *, dchannel_up: bool | None = None,
                    alarms: int | None = None) -> None:
        if dchannel_up:
            self.link.set()


def bench_clear_latency(calls: int) -> list[float]:
    """Seconds from network.clear() to EV_CLEARED, one answered call at a time."""
    loop = asyncio.new_event_loop()
    sink = _ClearTimingSink()
    network = NetworkEmulator()  # keeps call history, as SimulatedCard's does
    network.route("200", Answer())
    sig = build_span_signalling(loop, sink, 0, LINE_E1, ROLE_TE, network=network)
    loop.call_soon(sig.start)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ts = 1
    samples: list[float] = []
    try:
        assert sink.link.wait(5), "D-channel never came up"
        for i in range(calls + calls // 10):
            sink.active.clear()
            sink.cleared.clear()
            done = asyncio.run_coroutine_threadsafe(_dial(sig, ts), loop).result(5)
            assert done == MB_DONE and sink.active.wait(5), "call not answered"
            time.sleep(0.0005)  # let the acknowledgements settle: the loop is idle
            t0 = time.perf_counter()
            network.clear(0, ts)
            assert sink.cleared.wait(5), "call not cleared"
            if i >= calls // 10:  # the first tenth warms up
                samples.append(sink.cleared_at - t0)
    finally:
        loop.call_soon_threadsafe(sig.stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    return samples


async def _dial(sig: CardSignalling, ts: int) -> int:
    return sig.command(ts, CMD_MAKE_CALL, "200", "100", b"")


def bench_libpri(seconds: float) -> float | None:
    cc = shutil.which("cc")
    if cc is None or not Path("/usr/include/libpri.h").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "libpri_b2b")
        subprocess.run([cc, "-O2", "-o", exe, str(B2B_SOURCE), "-lpri"], check=True)
        out = subprocess.run([exe, str(SPANS), str(seconds)], check=True,
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    return float(out.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clear-latency", action="store_true")
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()
    if args.clear_latency:
        lat = sorted(bench_clear_latency(args.calls))
        p99 = lat[min(len(lat) - 1, round(0.99 * len(lat)))]
        print(f"clear latency over {len(lat)} calls: median {statistics.median(lat) * 1e6:.0f} us"
              f", p99 {p99 * 1e6:.0f} us")
        return
    sim, bad = bench_simulator(args.seconds)
    print(f"simulator: {sim:9.0f} call attempts/s  ({SPANS} E1 spans, {SPANS * 30} channels "
          f"busy, wrong causes: {bad})")
    lib = bench_libpri(args.seconds)
    if not lib:
        print("libpri:    not measured (no cc or no libpri.h, or no call completed)")
        return
    print(f"libpri:    {lib:9.0f} call attempts/s  (back to back, same pattern)")
    print(f"ratio simulator/libpri: {sim / lib:.2f}")


if __name__ == "__main__":
    main()
