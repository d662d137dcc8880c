"""C driver benchmarks over the simulated card's pty, each beside a floor measured in the same run.

    PYTHONPATH=pyapi:. python benchmarks/bench_driver.py [--reps N]

Floors: a bare write/read echo across a raw pty (an echo thread on the master side) for the
register round trip, and a one-way write waking a reader blocked on the slave for the
interrupt latency. Targets: median register round trip <= 2x the floor; draining 1,000 queued
events through the ring <= 1 ms; C bulk decode >= 10 million cause IEs/s. Also shown: draining
1,000 events the card posted (datasheet 3.1), already received by the driver.
"""

import argparse
import os
import random
import statistics
import threading
import time
import tty

import firmware_sim
from firmware_sim import regmap as rm
from telecard import Device
from telecard._cdriver import ffi, lib


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} us"


def pty_pair() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave


def echo_floor(reps: int, size: int) -> list[float]:
    """Round trips of `size` bytes through an echo thread on a pty master."""
    master, slave = pty_pair()
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            os.write(master, data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    msg = b"\x7e" + bytes(size - 2) + b"\x7e"
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        os.write(slave, msg)
        got = 0
        while got < size:
            got += len(os.read(slave, 4096))
        samples.append(time.perf_counter() - t0)
    stop.set()
    os.close(slave)
    os.close(master)
    t.join(1)
    return samples


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


def register_round_trips(dev: Device, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dev.read(rm.REG_MAGIC, 4)
        samples.append(time.perf_counter() - t0)
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

    with (
        firmware_sim.SimulatedCard(spans=1, line="E1") as card,
        Device.open(card.device_path) as dev,
    ):
        dev.write(rm.REG_INT_MASK, (rm.INT_EVENT).to_bytes(4, "little"))
        dev.drain_events()
        # READ request frame ~12 bytes, response ~11: echo the same amount each way
        floor = echo_floor(reps, 12)
        rtt = register_round_trips(dev, reps)
        wake_floor = wakeup_floor(min(reps, 1000))
        wake = irq_wakeups(card, dev, min(reps, 1000))
        drains = drain_times(card, dev, 30)
        posted = posted_drain_times(card, dev, 30)
        stats = dev.stats
    rate = decode_rate(1_000_000)

    ratio = statistics.median(rtt) / statistics.median(floor)
    print(f"register read round trip  median {us(statistics.median(rtt))}  p90 {us(pct(rtt, 0.9))}")
    print(
        f"  floor: pty echo         median {us(statistics.median(floor))}  p90 "
        f"{us(pct(floor, 0.9))}   ratio {ratio:.2f}  (target <= 2.0: {verdict(ratio <= 2.0)})"
    )
    print(
        f"irq-to-wakeup             median {us(statistics.median(wake))}  p90 {us(pct(wake, 0.9))}"
    )
    print(
        f"  floor: pty write->wake  median {us(statistics.median(wake_floor))}  p90 "
        f"{us(pct(wake_floor, 0.9))}   ratio "
        f"{statistics.median(wake) / statistics.median(wake_floor):.2f}"
    )
    d = statistics.median(drains)
    print(
        f"drain 1,000 events        median {us(d)}  p90 {us(pct(drains, 0.9))}"
        f"   (target <= 1 ms: {verdict(d <= 1e-3)})"
    )
    print(
        f"  the same, posted        median {us(statistics.median(posted))}"
        f"  p90 {us(pct(posted, 0.9))}"
    )
    print(
        f"C bulk cause decode       {rate / 1e6:8.1f} M IEs/s   (target >= 10 M/s: "
        f"{verdict(rate >= 10e6)})"
    )
    print(f"link: {stats}")


if __name__ == "__main__":
    main()
