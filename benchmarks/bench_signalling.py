"""Call attempts per second: the simulator's Q.931/Q.921 stack against libpri back to back,
each pair on the same transport in the same process layout.

Both sides run 16 E1 spans (480 channels) in one process: on each span a user-side (TE) stack
keeps a call attempt in flight on every channel and a network-side stack refuses each SETUP with
CALL PROCEEDING and DISCONNECT cause 17; every attempt is SETUP, CALL PROCEEDING, DISCONNECT,
RELEASE, RELEASE COMPLETE plus the LAPD acknowledgements.
  simulator: two CardSignalling ends per span on one asyncio loop;
  libpri:    a libpri CPE and a libpri network per span (tests/peers/libpri_b2b.c, built here).
Transports, each measured for both:
  socketpair: an AF_UNIX SOCK_SEQPACKET socketpair per span (firmware_sim.isdn.back_to_back(),
              the simulator's external D-channel; libpri on the same kind of socket via select);
  memory:     no system calls (the simulator's in-memory cable, libpri's I/O callbacks on a queue).
Also shown, not comparable with libpri: the simulator against its network emulator in memory, the
configuration SimulatedCard runs. Frames per call attempt (both directions) are counted over a
further second after the rate window (the simulator's counting taps are off while its rate is
measured).

--clear-latency: one span on a loop thread; for each answered call, the time from
NetworkEmulator.clear() on the main thread to the sink seeing EV_CLEARED (DISCONNECT, RELEASE,
RELEASE COMPLETE and their LAPD acknowledgements), median and p99.
Run: python benchmarks/bench_signalling.py [--seconds 2] [--rounds 3]
     python benchmarks/bench_signalling.py --clear-latency [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_sim import q931  # noqa: E402
from firmware_sim.dchannel import memory_link  # noqa: E402
from firmware_sim.isdn import CardSignalling, back_to_back, build_span_signalling  # noqa: E402
from firmware_sim.network import Answer, Busy, NetworkEmulator  # noqa: E402
from firmware_sim.regmap import (  # noqa: E402
    CMD_MAKE_CALL,
    CMD_RELEASE,
    EV_CLEARED,
    EV_INCOMING,
    LINE_E1,
    MB_DONE,
    ROLE_NT,
    ROLE_TE,
    ST_ACTIVE,
    bearer_timeslots,
)

SPANS = 16
B2B_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "peers" / "libpri_b2b.c"
BUSY = q931.cause_body(q931.CAUSE_USER_BUSY, q931.LOC_PUBLIC_REMOTE)
WARM_UP = 0.5
COUNT_SECONDS = 1.0


@dataclass(frozen=True)
class Rate:
    calls_per_second: float
    frames_per_call: float
    syscalls_per_call: float | None = None  # libpri only
    bad_causes: int = 0


class _DialingSink:
    """User-side firmware stand-in: re-dials every channel as soon as its call clears."""

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
            if cause != BUSY:
                self.bad_causes += 1
            self.loop.call_soon(self.dial, span, timeslot)

    def span_update(self, span: int, *, dchannel_up: bool | None = None,
                    alarms: int | None = None) -> None:
        if dchannel_up:
            self.links_up += 1

    def dial(self, span: int, timeslot: int) -> None:
        if self.spans[span].command(timeslot, CMD_MAKE_CALL, "200", "100", b"") == MB_DONE:
            self.attempts += 1


class _RefusingSink:
    """Network-side firmware stand-in: clears every incoming call with cause 17 at once (its
    CardSignalling has already sent CALL PROCEEDING), as libpri_b2b's network does."""

    def __init__(self) -> None:
        self.spans: list[CardSignalling] = []

    def channel_update(self, span: int, timeslot: int, *, state: int | None = None,
                       direction: int | None = None, call_ref: int | None = None,
                       called: str | None = None, calling: str | None = None,
                       cause: bytes | None = None, cause_source: int | None = None,
                       event: int | None = None) -> None:
        if event == EV_INCOMING:
            self.spans[span].command(timeslot, CMD_RELEASE, "", "", BUSY)

    def span_update(self, span: int, *, dchannel_up: bool | None = None,
                    alarms: int | None = None) -> None:
        pass


class _FrameCounter:
    """A D-channel tap that counts the frames its end sends."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, frame: bytes, sent: bool) -> None:
        if sent:
            self.sent += 1


def bench_simulator(seconds: float, far_end: str) -> Rate:
    """far_end: "socketpair" or "memory" (a network-side CardSignalling over that transport),
    or "emulator" (the NetworkEmulator over the in-memory cable)."""
    loop = asyncio.new_event_loop()
    sink = _DialingSink(loop)
    refuser = _RefusingSink()
    network = NetworkEmulator(keep_history=False)
    network.route("200", Busy("proceeding"))
    sockets: list[socket.socket] = []
    for s in range(SPANS):
        if far_end == "socketpair":
            te, nt = back_to_back()
            sockets += (te, nt)
            sink.spans.append(build_span_signalling(loop, sink, s, LINE_E1, ROLE_TE,
                                                    dchannel_socket=te))
            refuser.spans.append(build_span_signalling(loop, refuser, s, LINE_E1, ROLE_NT,
                                                       dchannel_socket=nt))
        elif far_end == "memory":
            te_end, nt_end = memory_link(loop)
            sink.spans.append(CardSignalling(loop, sink, s, LINE_E1, ROLE_TE, te_end))
            refuser.spans.append(CardSignalling(loop, refuser, s, LINE_E1, ROLE_NT, nt_end))
        else:
            sink.spans.append(build_span_signalling(loop, sink, s, LINE_E1, ROLE_TE,
                                                    network=network))
    ends = sink.spans + refuser.spans
    for sig in ends:
        sig.start()

    async def run() -> Rate:
        deadline = time.monotonic() + 10
        while sink.links_up < SPANS:
            assert time.monotonic() < deadline, "D-channels never came up"
            await asyncio.sleep(0.01)
        for s in range(SPANS):
            for ts in bearer_timeslots(LINE_E1):
                sink.dial(s, ts)
        await asyncio.sleep(WARM_UP)
        c0, t0 = sink.cleared, time.perf_counter()
        await asyncio.sleep(seconds)
        rate = (sink.cleared - c0) / (time.perf_counter() - t0)
        counters = [_FrameCounter() for _ in ends]
        for sig, counter in zip(ends, counters, strict=True):
            sig.transport.tap = counter
        if far_end == "emulator":  # the far ends' MemoryEnds are the card ends' peers
            for sig, counter in zip(sink.spans, counters, strict=True):
                sig.transport.peer.tap = counter
        c0 = sink.cleared
        await asyncio.sleep(COUNT_SECONDS)
        frames = sum(c.sent for c in counters) / max(1, sink.cleared - c0)
        return Rate(rate, frames, bad_causes=sink.bad_causes)

    try:
        return loop.run_until_complete(run())
    finally:
        for sig in ends:
            sig.stop()
        network.stop()
        loop.close()
        for sock in sockets:
            sock.close()


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


def build_libpri(directory: str) -> str | None:
    cc = shutil.which("cc")
    if cc is None or not Path("/usr/include/libpri.h").exists():
        return None
    exe = os.path.join(directory, "libpri_b2b")
    subprocess.run([cc, "-O2", "-o", exe, str(B2B_SOURCE), "-lpri"], check=True)
    return exe


def bench_libpri(exe: str, seconds: float, transport: str) -> Rate:
    out = subprocess.run([exe, str(SPANS), str(seconds), transport], check=True,
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rate, frames, syscalls = (float(x) for x in out.split())
    return Rate(rate, frames, syscalls)


def median_rate(rates: list[Rate]) -> Rate:
    """The run with the median rate (its own frame and system-call counts)."""
    return sorted(rates, key=lambda r: r.calls_per_second)[len(rates) // 2]


def show(name: str, rates: list[Rate]) -> None:
    r = median_rate(rates)
    extra = f", {r.syscalls_per_call:5.1f} syscalls/call" if r.syscalls_per_call is not None \
        else f", wrong causes: {sum(x.bad_causes for x in rates)}"
    spread = "/".join(f"{x.calls_per_second:.0f}" for x in rates)
    print(f"  {name:<10} {r.calls_per_second:9.0f} call attempts/s  "
          f"{r.frames_per_call:5.2f} frames/call{extra}   (runs: {spread})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of each figure, the simulator and libpri alternating")
    ap.add_argument("--clear-latency", action="store_true")
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()
    if args.clear_latency:
        lat = sorted(bench_clear_latency(args.calls))
        p99 = lat[min(len(lat) - 1, round(0.99 * len(lat)))]
        print(f"clear latency over {len(lat)} calls: median {statistics.median(lat) * 1e6:.0f} us"
              f", p99 {p99 * 1e6:.0f} us")
        return
    print(f"{SPANS} E1 spans, {SPANS * 30} channels, every attempt refused with cause 17 after "
          f"CALL PROCEEDING; medians of {args.rounds} runs of {args.seconds:g} s, the simulator "
          "and libpri alternating")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_libpri(tmp)
        for transport, label in (
            ("socketpair", "AF_UNIX SOCK_SEQPACKET socketpair per span, one process"),
            ("memory", "in memory, no system calls (not comparable with the socketpair figures)"),
        ):
            print(f"{transport}: {label}")
            sims: list[Rate] = []
            libs: list[Rate] = []
            for _ in range(args.rounds):
                sims.append(bench_simulator(args.seconds, transport))
                if exe is not None:
                    libs.append(bench_libpri(exe, args.seconds, "socket"
                                             if transport == "socketpair" else "memory"))
            show("simulator", sims)
            if not libs:
                print("  libpri     not measured (no cc or no libpri.h)")
                continue
            show("libpri", libs)
            ratios = sorted(s.calls_per_second / x.calls_per_second
                            for s, x in zip(sims, libs, strict=True))
            print(f"  ratio simulator/libpri: {statistics.median(ratios):.2f} (median of the "
                  f"rounds; {ratios[0]:.2f}-{ratios[-1]:.2f})")
    emus = [bench_simulator(args.seconds, "emulator") for _ in range(args.rounds)]
    print("in memory against the network emulator (SimulatedCard's configuration; "
          "no libpri counterpart)")
    show("simulator", emus)


if __name__ == "__main__":
    main()
