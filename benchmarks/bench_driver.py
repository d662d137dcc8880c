"""C driver benchmarks over a pty, each beside a floor measured in the same run.

    PYTHONPATH=pyapi:. python benchmarks/bench_driver.py [--reps N]

1. Register round trip: the driver reading a 4-byte register of `python -m firmware_sim --spans 1
   --line E1 --link PATH` (its own process), beside the floor the product pays on the same
   transport in the same process layout: this process writing a frame of the same size to a pty
   and reading it back from benchmarks/pty_echo.c, a C echo in its own process (built here with
   cc). Sampled in alternating blocks so drift in the machine's load hits both alike.
   Target: median round trip <= 2x the floor.
2. With the simulated card in this process (its loop thread): interrupt -> wait_irq() wake-up
   beside a pty write waking a reader thread; draining 1,000 queued events through the ring
   (target <= 1 ms); the same 1,000 events posted by the card (datasheet 3.1), already received.
3. C bulk cause-IE decode (target >= 10 million IEs/s).
Each driver figure carries the link's retries and timeouts (and any other trouble counter of
Device.stats that moved) over its own samples.
"""

import argparse
import os
import random
import statistics
import threading
import time
import tty

from benchcommon import card_process, link_trouble, pct, pty_echo_process, us

import firmware_sim
from firmware_sim import regmap as rm
from telecard import Device
from telecard._cdriver import ffi, lib

BLOCK = 100  # samples per alternating block
# A READ request frame is 12 bytes on the wire (flags, type, tag, address, length, CRC) and
# its response 11: the floor echoes 12.
READ_FRAME = 12


def pty_pair() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave


def echo_round_trips(fd: int, reps: int) -> list[float]:
    """Round trips of a READ-sized frame through the C echo process."""
    msg = b"\x7e" + bytes(READ_FRAME - 2) + b"\x7e"
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        os.write(fd, msg)
        got = 0
        while got < READ_FRAME:
            got += len(os.read(fd, 4096))
        samples.append(time.perf_counter() - t0)
    return samples


def register_round_trips(dev: Device, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dev.read(rm.REG_MAGIC, 4)
        samples.append(time.perf_counter() - t0)
    return samples


def round_trip_vs_floor(reps: int) -> tuple[list[float], list[float], list[float], str]:
    """(driver round trips, C echo floor, the ratio of their medians in each pair of blocks,
    the driver's link trouble over its samples)."""
    with card_process(1) as card, pty_echo_process() as echo_path, Device.open(card.link) as dev:
        fd = os.open(echo_path, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            echo_round_trips(fd, BLOCK)  # warm up both
            register_round_trips(dev, BLOCK)
            before = dev.stats
            rtt: list[float] = []
            floor: list[float] = []
            ratios: list[float] = []
            for _ in range(max(1, reps // BLOCK)):
                f = echo_round_trips(fd, BLOCK)
                r = register_round_trips(dev, BLOCK)
                floor += f
                rtt += r
                ratios.append(statistics.median(r) / statistics.median(f))
            return rtt, floor, ratios, link_trouble(before, dev.stats)
        finally:
            os.close(fd)


def wakeup_floor(reps: int) -> list[float]:
    """Time from a write on a pty master to the wake-up of a reader blocked on the slave."""
    master, slave = pty_pair()
    woke = threading.Event()
    stamp: list[float] = []

    def reader() -> None:
        for _ in range(reps):
            os.read(slave, 64)
            stamp.append(time.perf_counter())
            woke.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    samples = []
    for _ in range(reps):
        time.sleep(0.0005)
        woke.clear()
        t0 = time.perf_counter()
        os.write(master, b"\x7e\x10\x00\x01\x00\x00\x00\x00\x00\x7e")
        woke.wait(1)
        samples.append(stamp[-1] - t0)
    t.join(1)
    os.close(slave)
    os.close(master)
    return samples


def irq_wakeups(card: firmware_sim.SimulatedCard, dev: Device, reps: int) -> list[float]:
    """From the card raising EVENT (its loop thread) to wait_irq() returning in the host."""
    fw = card.firmware
    raised: list[float] = []

    def raise_event() -> None:
        raised.append(time.perf_counter())
        fw._push_event(0, 1, rm.EV_STATE, 0, 0)  # on the card's own loop

    samples = []
    for _ in range(reps):
        dev.drain_events()
        while dev.wait_irq(0) is not None:
            pass
        card.loop.call_soon_threadsafe(raise_event)
        status = dev.wait_irq(1.0)
        woke = time.perf_counter()
        if status is not None and raised:
            samples.append(woke - raised[-1])
        raised.clear()
    dev.drain_events()
    return samples


def queue_1000_events(card: firmware_sim.SimulatedCard) -> None:
    """On the card's loop: 1,000 events into the ring (and posted, if posting is on)."""
    for i in range(1000):
        card.firmware._push_event(0, 2, rm.EV_STATE, i & 0xFF, i)


def drain_times(card: firmware_sim.SimulatedCard, dev: Device, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        dev.drain_events()
        firmware_sim.firmware.call_on_loop(card.loop, queue_1000_events, card)
        t0 = time.perf_counter()
        events, _ = dev.drain_events(max=1024)
        samples.append(time.perf_counter() - t0)
        assert len(events) == 1000, len(events)
    return samples


def posted_drain_times(card: firmware_sim.SimulatedCard, dev: Device, reps: int) -> list[float]:
    dev.set_event_post(True)
    samples = []
    for _ in range(reps):
        while dev.drain_events()[0]:
            pass
        frames = dev.stats.event_frames
        firmware_sim.firmware.call_on_loop(card.loop, queue_1000_events, card)
        while dev.stats.event_frames < frames + 16:  # 1,000 events, 64 a frame
            dev.wait_irq(1.0)
        t0 = time.perf_counter()
        events, _ = dev.drain_events(max=1024)
        samples.append(time.perf_counter() - t0)
        assert len(events) == 1000, len(events)
    dev.set_event_post(False)
    return samples


def decode_rate(count: int) -> float:
    rng = random.Random(1)
    ies = []
    for _ in range(count):
        octet3 = rng.choice((0x80, 0x81, 0x82, 0x84, 0x8A))
        diag = bytes(rng.choice((b"", b"303", b"\x08"))) if rng.random() < 0.3 else b""
        if rng.random() < 0.1:
            ies.append(bytes((octet3 & 0x7F, 0x80)) + bytes((0x80 | rng.randrange(128),)) + diag)
        else:
            ies.append(bytes((octet3, 0x80 | rng.randrange(128))) + diag)
    buf = b"".join(ies)
    lens = bytes(len(ie) for ie in ies)
    out = ffi.new("tc_cause[]", count)
    results = ffi.new("int32_t[]", count)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        ok = lib.tc_cause_decode_bulk(buf, len(buf), lens, count, out, results)
        best = min(best, time.perf_counter() - t0)
        assert ok == count
    return count / best


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3000)
    args = parser.parse_args()
    reps = args.reps

    rtt, floor, ratios, rtt_link = round_trip_vs_floor(reps)
    with (
        firmware_sim.SimulatedCard(spans=1, line="E1") as card,
        Device.open(card.device_path) as dev,
    ):
        dev.write(rm.REG_INT_MASK, (rm.INT_EVENT).to_bytes(4, "little"))
        dev.drain_events()
        wake_floor = wakeup_floor(min(reps, 1000))
        s0 = dev.stats
        wake = irq_wakeups(card, dev, min(reps, 1000))
        s1 = dev.stats
        drains = drain_times(card, dev, 30)
        s2 = dev.stats
        posted = posted_drain_times(card, dev, 30)
        s3 = dev.stats
    rate = decode_rate(1_000_000)

    ratio = statistics.median(rtt) / statistics.median(floor)
    print("the card in its own process (python -m firmware_sim), the floor a C echo in its own")
    print(f"register read round trip  median {us(statistics.median(rtt))}  p90 {us(pct(rtt, 0.9))}"
          f"   [{rtt_link}]")
    print(
        f"  floor: C pty echo       median {us(statistics.median(floor))}  p90 "
        f"{us(pct(floor, 0.9))}   ratio {ratio:.2f}  (target <= 2.0: {verdict(ratio <= 2.0)})"
    )
    print(f"  ratio block by block ({len(ratios)} pairs of {BLOCK}): median "
          f"{statistics.median(ratios):.2f}, quartiles {pct(ratios, 0.25):.2f}-"
          f"{pct(ratios, 0.75):.2f}")
    print("the card in this process (its loop thread), the floor a reader thread")
    print(
        f"irq-to-wakeup             median {us(statistics.median(wake))}  p90 {us(pct(wake, 0.9))}"
        f"   [{link_trouble(s0, s1)}]"
    )
    print(
        f"  floor: pty write->wake  median {us(statistics.median(wake_floor))}  p90 "
        f"{us(pct(wake_floor, 0.9))}   ratio "
        f"{statistics.median(wake) / statistics.median(wake_floor):.2f}"
    )
    d = statistics.median(drains)
    print(
        f"drain 1,000 events        median {us(d)}  p90 {us(pct(drains, 0.9))}"
        f"   (target <= 1 ms: {verdict(d <= 1e-3)})   [{link_trouble(s1, s2)}]"
    )
    print(
        f"  the same, posted        median {us(statistics.median(posted))}"
        f"  p90 {us(pct(posted, 0.9))}   [{link_trouble(s2, s3)}]"
    )
    print(
        f"C bulk cause decode       {rate / 1e6:8.1f} M IEs/s   (target >= 10 M/s: "
        f"{verdict(rate >= 10e6)})"
    )


if __name__ == "__main__":
    main()
