"""Call attempts per second: the simulator's Q.931/Q.921 stack against libpri back to back.

Simulator: 16 E1 spans (480 channels) of a TE card cabled to the network emulator on one
asyncio loop; every channel keeps a call attempt in flight: SETUP, CALL PROCEEDING,
DISCONNECT (cause 17), RELEASE, RELEASE COMPLETE, with the LAPD acknowledgements.
libpri: 16 pairs of libpri instances (CPE and network) on socketpairs in one C program
(tests/peers/libpri_b2b.c), same call pattern, measured in the same run.
Run: python benchmarks/bench_signalling.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_sim.isdn import build_span_signalling  # noqa: E402
from firmware_sim.network import Busy, NetworkEmulator  # noqa: E402
from firmware_sim.regmap import (  # noqa: E402
    CMD_MAKE_CALL,
    EV_CLEARED,
    LINE_E1,
    ROLE_TE,
    bearer_timeslots,
)

SPANS = 16
B2B_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "peers" / "libpri_b2b.c"


class _DialingSink:
    """Firmware stand-in: re-dials every channel as soon as its call clears."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.spans: list = []
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
    args = ap.parse_args()
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
