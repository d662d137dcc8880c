"""The simulated card stays bounded and safe: a peer that stays busy (RNR) gets the link reset
and then released, with a bounded transmit queue; the network's call history is bounded;
--pcap and --link never follow or clobber what is at their paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from isdn_harness import Harness, cause_value

from firmware_sim import lapd, q931
from firmware_sim.callcontrol import P_ACTIVE
from firmware_sim.network import RECEIVED_KEPT, Answer, NetworkEmulator, NoAnswer
from firmware_sim.pcap import PcapWriter
from firmware_sim.regmap import CMD_MAKE_CALL, ST_ACTIVE, ST_OUT_ALERTING

REPO = Path(__file__).resolve().parent.parent
T200 = 0.05
N200 = 3
T309 = 5.0
# STATUS ENQUIRY for a call reference the card does not know: the card answers every one.
ENQUIRY = bytes((q931.PROTOCOL_DISCRIMINATOR, 0x02, 0x00, 0x33, 0x75))


class BusyPeer:
    """The network side of span 0 at frame level, receiver busy for ever: it accepts
    establishment but answers every I-frame and poll with RNR (Q.921 5.6.5)."""

    def __init__(self, h: Harness) -> None:
        es = h.network._spans[0]
        far = es.cc.lapd
        far.stop()  # the real far end falls silent; this peer takes over its cable end
        self.end = es.cc.transport
        self.vs, self.vr = far.vs, far.vr
        self.frames: list[tuple[float, bytes]] = []  # what the card sent, when
        self.end.set_receiver(self.receive)
        self.rnr(False)

    def rnr(self, final: bool) -> None:
        self.end.send(bytes((0x00, 0x01, lapd.RNR, self.vr << 1 | final)))  # response

    def enquire(self) -> None:
        self.end.send(bytes((0x02, 0x01, self.vs << 1, self.vr << 1)) + ENQUIRY)
        self.vs = (self.vs + 1) & 0x7F

    def receive(self, frame: bytes) -> None:
        self.frames.append((time.monotonic(), frame))
        c0, pf = frame[2], bool(frame[-1] & 0x01 if frame[2] & 0x03 != 0x03
                                else frame[2] & lapd.PF_U)
        u = c0 & ~lapd.PF_U & 0xFF
        if u == lapd.SABME:
            self.vs = self.vr = 0
            self.end.send(bytes((0x00, 0x01, lapd.UA | lapd.PF_U)))
            self.rnr(False)
        elif u == lapd.DISC:
            self.end.send(bytes((0x00, 0x01, lapd.UA | lapd.PF_U)))
        elif not c0 & 0x01 or pf:  # an I-frame, or a poll
            self.rnr(pf)

    def first(self, ctl: int, after: float) -> float:
        return next(t for t, f in self.frames if t > after and f[2] & ~lapd.PF_U & 0xFF == ctl)


def test_busy_peer_resets_then_releases_the_link_with_a_bounded_queue() -> None:
    h = Harness(timers={"T200": T200, "T203": 1.0, "T309": T309})
    try:
        h.wait_link(0)
        h.network.route("100", Answer())
        h.network.route("101", NoAnswer())
        sig = h.spans[0]
        sig.command(1, CMD_MAKE_CALL, "100", "", b"")
        sig.command(2, CMD_MAKE_CALL, "101", "", b"")
        h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE
                    and h.sink.chan(0, 2).state == ST_OUT_ALERTING)
        card = sig.cc.lapd
        start = time.monotonic()
        peer = BusyPeer(h)
        longest = 0
        # The peer keeps asking: every answer waits in the card's queue while the peer is busy.
        for _ in range(40):
            for _ in range(50):
                peer.enquire()
            h.run(0.001)
            longest = max(longest, len(card.queue))
        assert longest <= lapd.MAX_QUEUE + card.k and card.stats["overflow"] > 0
        h.run_until(lambda: card.stats["busy_failures"] >= 1, timeout=5)
        # Q.921 5.6.5 b): N200 polls answered busy, then re-establishment (5.7) at the next
        # T200 expiry; still busy after it, N200 polls more and the link is released.
        busy_cycle = (N200 + 1) * T200
        sabme = peer.first(lapd.SABME, start)
        disc = peer.first(lapd.DISC, sabme)
        assert sabme - start < busy_cycle + 0.5  # the flood above takes its share
        assert busy_cycle * 0.9 < disc - sabme < busy_cycle + 0.3
        polls = [t for t, f in peer.frames if start < t < sabme and f[2] == lapd.RR and f[3] & 1]
        assert len(polls) == N200
        assert card.stats["reestablished"] == 1
        # Q.931 5.8.9: the active call is kept under T309, the alerting one cleared (41).
        h.run_until(lambda: h.sink.cleared(0, 2) == 1)
        assert cause_value(h.sink.chan(0, 2).cause) == q931.CAUSE_TEMPORARY_FAILURE
        active = sig.cc.channels[1]
        assert active.phase == P_ACTIVE and h.sink.chan(0, 1).state == ST_ACTIVE
        assert h.sink.cleared(0, 1) == 0
        # The link comes back (the peer still accepts SABME): T309 stops, and the cycle repeats.
        h.run_until(lambda: card.stats["busy_failures"] >= 2, timeout=5)
        assert len(card.queue) <= lapd.MAX_QUEUE and len(card.sent) <= card.k
        assert h.sink.chan(0, 1).state == ST_ACTIVE
    finally:
        h.close()


def test_a_peer_ready_again_keeps_the_link() -> None:
    h = Harness(timers={"T200": T200, "T203": 1.0})
    try:
        h.wait_link(0)
        card = h.spans[0].cc.lapd
        peer = BusyPeer(h)
        h.run(T200 * 1.5)  # one poll answered busy
        peer.end.set_receiver(lambda f: None)
        peer.end.send(bytes((0x00, 0x01, lapd.RR, peer.vr << 1)))  # ready again
        h.run(0.02)
        assert not card.peer_busy and card.busy_polls == 0
    finally:
        h.close()


def test_network_history_is_bounded() -> None:
    net = NetworkEmulator()
    assert net.history == RECEIVED_KEPT
    net = NetworkEmulator(history=3)
    h_calls = []
    for _ in range(10):
        handle = object()
        h_calls.append(handle)
        net._record(handle)  # type: ignore[arg-type]
    assert net.received == h_calls[-3:] and net.wait_received(10) == h_calls[-3:]
    net.history = 1
    assert net.received == h_calls[-1:]
    net.history = 0
    net._record(object())  # type: ignore[arg-type]
    assert net.received == [] and net.wait_received(11) == []
    with pytest.raises(ValueError):
        net.history = -1


def test_pcap_writer_refuses_existing_file_and_symlink(tmp_path: Path) -> None:
    existing = tmp_path / "old.pcapng"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        PcapWriter(existing)
    assert existing.read_bytes() == b"keep me"
    target = tmp_path / "target"
    target.write_bytes(b"victim")
    link = tmp_path / "link.pcapng"
    link.symlink_to(target)
    for overwrite in (False, True):
        with pytest.raises(OSError):
            PcapWriter(link, overwrite=overwrite)
    assert target.read_bytes() == b"victim"
    dangling = tmp_path / "dangling.pcapng"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError):
        PcapWriter(dangling)
    assert not (tmp_path / "nowhere").exists()
    PcapWriter(existing, overwrite=True).close()
    assert existing.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"


def run_sim(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'pyapi'}")
    return subprocess.run([sys.executable, "-m", "firmware_sim", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def start_sim(*args: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'pyapi'}")
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop_sim(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_main_pcap_refuses_existing_file_and_symlink(tmp_path: Path) -> None:
    existing = tmp_path / "d.pcapng"
    existing.write_bytes(b"keep me")
    r = run_sim("--pcap", str(existing))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--pcap-overwrite" in r.stderr and existing.read_bytes() == b"keep me"
    target = tmp_path / "target"
    target.write_bytes(b"victim")
    link = tmp_path / "link.pcapng"
    link.symlink_to(target)
    for extra in ([], ["--pcap-overwrite"]):
        r = run_sim("--pcap", str(link), *extra)
        assert r.returncode != 0 and "Traceback" not in r.stderr and "--pcap" in r.stderr
        assert target.read_bytes() == b"victim" and link.is_symlink()
    assert "--pcap-overwrite" in run_sim("--help").stdout
    proc, device = start_sim("--pcap", str(existing), "--pcap-overwrite")
    try:
        assert device.startswith("/dev/")
    finally:
        stop_sim(proc)
    assert existing.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"


def test_main_link_replaces_a_stale_link_and_refuses_a_file(tmp_path: Path) -> None:
    link = tmp_path / "tcard0"
    stale = os.path.join(os.path.dirname(os.ttyname(os.openpty()[1])), "9999")
    link.symlink_to(stale)  # left behind by a killed card
    proc, device = start_sim("--link", str(link))
    try:
        assert os.readlink(link) == device
        # no temporary left; the monitor ports beside it (datasheet 4.6)
        names = ["tcard0", "tcard0.monitor1", "tcard0.monitor2"]
        assert sorted(p.name for p in tmp_path.iterdir()) == names
    finally:
        stop_sim(proc)
    assert not link.exists() and not link.is_symlink()
    assert list(tmp_path.iterdir()) == []
    other = tmp_path / "precious"
    other.write_text("data")
    link.symlink_to(other)  # a symlink that is not a card's: refused, left alone
    r = run_sim("--link", str(link))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "not a card" in r.stderr
    assert os.readlink(link) == str(other) and other.read_text() == "data"
    link.unlink()
    link.write_text("a regular file")
    r = run_sim("--link", str(link))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "not a symlink" in r.stderr and link.read_text() == "a regular file"


def test_main_link_removes_stale_monitor_links_beyond_its_ports(tmp_path: Path) -> None:
    """A card killed with more monitor ports left PATH.monitorN symlinks a card serving fewer
    must not leave beside its PATH: an observer would try those first (datasheet 4.6)."""
    link = tmp_path / "tcard0"
    master, slave = os.openpty()
    pty_dir = os.path.dirname(os.ttyname(slave))
    os.close(master)
    os.close(slave)
    for port in (1, 2, 3):
        Path(f"{link}.monitor{port}").symlink_to(os.path.join(pty_dir, f"999{port}"))
    precious = tmp_path / "precious"
    precious.write_text("data")
    Path(f"{link}.monitor4").symlink_to(precious)  # not a card's: left alone
    proc, device = start_sim("--link", str(link), "--monitor-ports", "1")
    try:
        assert os.readlink(link) == device
        names = ["precious", "tcard0", "tcard0.monitor1", "tcard0.monitor4"]
        assert sorted(p.name for p in tmp_path.iterdir()) == names
        assert os.path.dirname(os.readlink(f"{link}.monitor1")) == pty_dir
    finally:
        stop_sim(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "tcard0.monitor4"]


def test_link_temporary_name_is_not_the_pid(tmp_path: Path) -> None:
    from firmware_sim.__main__ import _make_link

    link = tmp_path / "tcard0"
    pty_dir = os.path.dirname(os.ttyname(os.openpty()[1]))
    link.symlink_to(os.path.join(pty_dir, "9999"))
    planted = tmp_path / f"tcard0.{os.getpid()}.tmp"  # where a predictable name would go
    planted.symlink_to(tmp_path / "elsewhere")
    _make_link(str(link), os.path.join(pty_dir, "9998"))
    assert os.readlink(link) == os.path.join(pty_dir, "9998")
    assert os.readlink(planted) == str(tmp_path / "elsewhere")


def test_standalone_history_is_small() -> None:
    import firmware_sim.__main__ as main

    assert 0 <= main.STANDALONE_HISTORY <= 100 < RECEIVED_KEPT


def test_main_failing_to_start_leaves_no_socket_and_keeps_the_capture(tmp_path: Path) -> None:
    """A --link refused after the control socket is served: that socket goes again, and
    --pcap-overwrite has not yet touched the old capture."""
    control = tmp_path / "card.ctl"
    capture = tmp_path / "d.pcapng"
    capture.write_bytes(b"keep me")
    link = tmp_path / "tcard0"
    link.write_text("a regular file")
    r = run_sim("--control", str(control), "--link", str(link),
                "--pcap", str(capture), "--pcap-overwrite")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "not a symlink" in r.stderr
    assert not control.exists() and capture.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pcapng", "tcard0"]
