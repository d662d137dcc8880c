"""Control-socket round trip (issue 8), beside the pty floor of the same card.

    PYTHONPATH=pyapi:. python benchmarks/bench_control.py [--reps N] [--rounds R]

Against `python -m firmware_sim --spans 1 --line E1 --demo-plan --control PATH` in its own
process, driven with firmware_sim.remote from this process:

- route(): one `sim.network.route(number, Busy())` request and its answer;
- route + place + result: route a number, `place_call()` an incoming call, and `wait()` until it
  has cleared. An application thread in this process (telecard.Card on the card's pty) takes
  each incoming call and rejects it with cause 17, so the figure holds the card's Q.931 and the
  application's side of the call as well as three control requests;
- the floor: a 4-byte register read through telecard.Device on the same card, as the product
  pays the pty.

The three are measured in alternating blocks (R rounds of N each) so that drift in the
machine's load falls on all of them alike; medians and p99 are over every block.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

from benchcommon import card_process, link_trouble, pct, us

from firmware_sim import q931
from firmware_sim.network import Busy
from firmware_sim.remote import RemoteCard
from telecard import Card, Cause, TelecardError
from telecard._cdriver import lib

E1_CHANNELS = [ts for ts in range(1, 32) if ts != 16]


def answering_machine(
    card: Card, stop: threading.Event, taken: list[float], errors: list[BaseException]
) -> None:
    """The application: reject every incoming call with cause 17 (user busy); `taken` gets
    the moment it has each call in hand, to split the round trip in two."""
    while not stop.is_set():
        channel = card.wait_for_incoming_call(seconds_timeout=0.2)
        if channel is None:
            continue
        taken.append(time.perf_counter())
        try:
            channel.reject(Cause.BUSY)
        except TelecardError as exc:
            errors.append(exc)
        finally:
            channel.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=500, help="per block (default 500)")
    parser.add_argument("--rounds", type=int, default=4, help="blocks of each (default 4)")
    args = parser.parse_args()

    floor: list[float] = []
    route: list[float] = []
    full: list[float] = []
    offered: list[float] = []  # from the route request to the application holding the call
    cleared: list[float] = []  # from there to the network's wait() returning
    taken: list[float] = []
    bad: list[str] = []
    errors: list[BaseException] = []
    with tempfile.TemporaryDirectory() as tmp:
        control = os.path.join(tmp, "card.ctl")
        with (card_process(1, "--control", control, demo_plan=True),
              RemoteCard.connect(control) as sim,
              Card.open(sim.device_path) as card):
            stop = threading.Event()
            app = threading.Thread(target=answering_machine, args=(card, stop, taken, errors),
                                   daemon=True)
            app.start()
            net = sim.network
            link_before = card.device.stats
            for _ in range(args.rounds):
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    card.device.read(lib.TC_REG_MAGIC, 4)
                    floor.append(time.perf_counter() - t0)
                for i in range(args.reps):
                    t0 = time.perf_counter()
                    net.route(f"39{i % 100:02d}", Busy())
                    route.append(time.perf_counter() - t0)
                for i in range(args.reps):
                    t0 = time.perf_counter()
                    net.route(f"38{i % 100:02d}", Busy())
                    # A channel a call: the one before may still be the application's
                    # (until its release()), and the card would refuse it with cause 44.
                    ts = E1_CHANNELS[i % len(E1_CHANNELS)]
                    result = net.place_call("2000", from_="0123", timeslot=ts).wait(timeout=5)
                    t1 = time.perf_counter()
                    full.append(t1 - t0)
                    if taken:  # calls are one at a time: the only one taken is this one
                        at = taken.pop()
                        offered.append(at - t0)
                        cleared.append(t1 - at)
                    if not result.cleared or result.cause != q931.CAUSE_USER_BUSY:
                        bad.append(repr(result))
            trouble = link_trouble(link_before, card.device.stats)
            stop.set()
            app.join(5)

    n = args.rounds * args.reps
    f50 = statistics.median(floor)
    print(f"control socket round trips, {args.rounds} rounds of {args.reps} each ({n} of each)"
          f"   [pty link: {trouble}]")
    print(f"  pty floor: 4-byte register read via telecard.Device, median {us(f50)},"
          f" p99 {us(pct(floor, 0.99))}")
    for name, samples in (("route()", route), ("route + place_call + wait(cleared)", full)):
        m = statistics.median(samples)
        print(f"  {name}: median {us(m)} ({m / f50:.1f}x the floor), p99 {us(pct(samples, 0.99))}"
              f" ({pct(samples, 0.99) / f50:.1f}x)")
    print(f"    of which, medians: until the application holds the call"
          f" {us(statistics.median(offered))}; from its reject to wait() returning"
          f" {us(statistics.median(cleared))}")
    slow = [t for t in full if t > 0.05]
    if slow:
        print(f"    {len(slow)} over 50 ms, the slowest {max(slow) * 1e3:.0f} ms; over 50 ms:"
              f" {sum(t > 0.05 for t in offered)} until held, {sum(t > 0.05 for t in cleared)}"
              " from the reject")
    if bad or errors:
        print(f"  anomalies: {len(bad)} calls not cleared with cause 17"
              f"{', first ' + bad[0] if bad else ''}; {len(errors)} application errors")


if __name__ == "__main__":
    main()
