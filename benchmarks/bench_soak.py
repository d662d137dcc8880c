"""Soak (issue 8): does a standalone card's memory stay bounded under a long run of calls?

    PYTHONPATH=pyapi:. python benchmarks/bench_soak.py [--attempts N] [--threads T]

Against `python -m firmware_sim --spans 16 --line E1 --demo-plan` in its own process, with its
default standalone history: T application threads, each on its own fixed channel spread over the
spans, place busy calls (3301, refused with cause 17) back to back, and every 20th attempt an
answered one (3302, hung up at once) so the card's history holds both kinds. The card's RSS
(/proc/PID/status VmRSS) is sampled every 10,000 attempts; the figure is its growth after the
first 10,000 against the target of +10 MB.

Then (unless --rnr 0) the busy peer: span 0's D-channel handed to a LAPD peer in this process
(--dchannel 0=PATH) that accepts the link but answers every I-frame and poll with RNR, while
flooding the card with STATUS ENQUIRY, each of which the card must answer; the card's RSS every
5 s, and how often it reset (SABME) and released (DISC) the link.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from collections import Counter

from benchcommon import card_process, rss_mb

from firmware_sim import lapd, q931
from firmware_sim.dchannel import fcs
from telecard import CallChannel, Card, Cause, State, TelecardError

STEP = 10_000
TARGET_MB = 10.0
ANSWERED_EVERY = 20


class Caller:
    """One application thread's tallies (written by it alone)."""

    def __init__(self, channel: CallChannel) -> None:
        self.channel = channel
        self.attempts = 0
        self.answered = 0
        self.wrong: Counter[str] = Counter()
        self.errors: list[BaseException] = []

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            answered = self.attempts % ANSWERED_EVERY == ANSWERED_EVERY - 1
            try:
                state = self.channel.call("3302" if answered else "3301", seconds_timeout=10)
                if answered:
                    if state is State.ANSWERED:
                        self.answered += 1
                    else:
                        self.wrong[f"3302 {state.name}/{self.channel.cause().name}"] += 1
                    self.channel.hang_up()
                elif state is not State.IDLE or self.channel.cause() is not Cause.BUSY:
                    self.wrong[f"3301 {state.name}/{self.channel.cause().name}"] += 1
            except TelecardError as exc:  # tallied: the soak is about memory, not one call
                self.errors.append(exc)
            self.attempts += 1


def soak(attempts: int, threads: int) -> None:
    with card_process(16, demo_plan=True) as proc, Card.open(proc.link) as card:
        spans = card.spans
        callers = [
            Caller(card.channel(spans[i % len(spans)].index,
                                spans[i % len(spans)].channels[i // len(spans)]))
            for i in range(threads)
        ]
        stop = threading.Event()
        workers = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in callers]
        start_rss = rss_mb(proc.pid)
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        # (attempts so far, seconds, card RSS, this process's RSS) at each multiple of STEP
        curve: list[tuple[int, float, float, float]] = []
        due = STEP
        while due <= attempts:
            done = sum(c.attempts for c in callers)
            if done >= due:
                curve.append((done, time.perf_counter() - t0, rss_mb(proc.pid), rss_mb()))
                due += STEP
            else:
                time.sleep(0.002)  # a few calls' worth: samples land within ~20 of the step
        stop.set()
        for w in workers:
            w.join(30)
        elapsed = time.perf_counter() - t0
        total = sum(c.attempts for c in callers)
        end_rss = rss_mb(proc.pid)
        answered = sum(c.answered for c in callers)
        wrong = sum((c.wrong for c in callers), Counter())
        errors = [e for c in callers for e in c.errors]

    print(f"soak: {total:,} call attempts from {threads} threads in {elapsed:.1f} s"
          f" ({total / elapsed:,.0f}/s), {answered:,} of them answered (3302)")
    print(f"  card RSS at start {start_rss:.1f} MB (no calls yet)")
    print(f"  {'attempts':>9} {'seconds':>8} {'card RSS':>9} {'vs 10k':>8} {'app RSS':>8}")
    base = curve[0][2]
    for done, at, card_rss, app_rss in curve:
        print(f"  {done:>9,} {at:>8.1f} {card_rss:>6.1f} MB {card_rss - base:>+5.1f} MB"
              f" {app_rss:>5.1f} MB")
    growth = max(r for _, _, r, _ in curve) - base
    verdict = "met" if growth <= TARGET_MB else "NOT met"
    print(f"  growth after the first {STEP:,}: max {growth:+.1f} MB, at the end"
          f" {curve[-1][2] - base:+.1f} MB (after the threads stopped {end_rss - base:+.1f} MB)"
          f"   target <= +{TARGET_MB:.0f} MB — {verdict}")
    if wrong or errors:
        first = f", first {errors[0]!r}" if errors else ""
        print(f"  anomalies: {dict(wrong)}; {len(errors)} errors{first}")


# STATUS ENQUIRY for a call reference the card does not know: the card answers every one.
ENQUIRY = bytes((q931.PROTOCOL_DISCRIMINATOR, 0x02, 0x00, 0x33, 0x75))


class BusyPeer:
    """The network side of a D-channel, receiver busy for ever (Q.921 5.6.5): it accepts
    establishment, answers every I-frame and poll with RNR, and keeps sending enquiries."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.vs = self.vr = 0
        self.seen: Counter[str] = Counter()
        self.sent = 0  # enquiries the card's socket took

    def send(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame + fcs(frame))
        except BlockingIOError:  # the card is not reading: its problem, not the peer's
            return False
        return True

    def rnr(self, final: bool) -> None:
        self.send(bytes((0x00, 0x01, lapd.RNR, self.vr << 1 | final)))  # response

    def enquire(self) -> None:
        if self.send(bytes((0x02, 0x01, self.vs << 1, self.vr << 1)) + ENQUIRY):
            self.vs = (self.vs + 1) & 0x7F
            self.sent += 1

    def receive(self, packet: bytes) -> None:
        frame = packet[:-2]
        c0 = frame[2]
        if c0 & 0x03 == 0x03:  # U-frame
            u = c0 & ~lapd.PF_U & 0xFF
            if u == lapd.SABME:
                self.seen["SABME"] += 1
                self.vs = self.vr = 0
                self.send(bytes((0x00, 0x01, lapd.UA | lapd.PF_U)))
                self.rnr(False)
            elif u == lapd.DISC:
                self.seen["DISC"] += 1
                self.send(bytes((0x00, 0x01, lapd.UA | lapd.PF_U)))
        elif not c0 & 0x01:  # I-frame
            self.seen["I"] += 1
            self.rnr(bool(frame[3] & 0x01))
        elif frame[3] & 0x01:  # a poll
            self.seen["poll"] += 1
            self.rnr(True)

    def pump(self, until: float, burst: int = 50) -> None:
        """Flood and answer until `until` (perf_counter)."""
        while time.perf_counter() < until:
            for _ in range(burst):
                self.enquire()
            while True:
                try:
                    self.receive(self.sock.recv(4096))
                except BlockingIOError:
                    break
            time.sleep(0.001)


def rnr_case(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dchan0")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server.bind(path)
        server.listen(1)
        server.settimeout(10)
        with card_process(16, "--dchannel", f"0={path}", demo_plan=True) as proc:
            sock, _ = server.accept()
            sock.setblocking(False)
            peer = BusyPeer(sock)
            t0 = time.perf_counter()
            start_rss = rss_mb(proc.pid)
            curve = []
            while (at := time.perf_counter() - t0) < seconds:
                peer.pump(t0 + min(seconds, at + 5.0))
                curve.append((time.perf_counter() - t0, peer.sent, rss_mb(proc.pid),
                              dict(peer.seen)))
            sock.close()
        server.close()
    print(f"busy (RNR) peer on span 0 for {seconds:.0f} s: {peer.sent:,} STATUS ENQUIRY sent"
          f" to the card; card RSS at start {start_rss:.1f} MB")
    print(f"  {'seconds':>8} {'enquiries':>10} {'card RSS':>9}  frames from the card so far")
    for at, sent, card_rss, seen in curve:
        print(f"  {at:>8.1f} {sent:>10,} {card_rss:>6.1f} MB  {seen}")
    print(f"  growth from the first sample to the last: {curve[-1][2] - curve[0][2]:+.1f} MB"
          f" (max {max(r for _, _, r, _ in curve) - curve[0][2]:+.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=100_000, help="default 100,000")
    parser.add_argument("--threads", type=int, default=64, help="default 64")
    parser.add_argument("--rnr", type=float, default=30.0, metavar="SECONDS",
                        help="the busy-peer case, default 30 s; 0 skips it")
    parser.add_argument("--no-soak", action="store_true", help="only the busy-peer case")
    args = parser.parse_args()
    if args.attempts < STEP:
        parser.error(f"--attempts must be at least {STEP:,}")
    if not args.no_soak:
        soak(args.attempts, args.threads)
    if args.rnr > 0:
        rnr_case(args.rnr)


if __name__ == "__main__":
    main()
