"""`python -m firmware_sim` with --dchannel, --pcap and --demo-plan, as a rig would run it."""

import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

from firmware_sim.dchannel import fcs
from firmware_sim.pcap import LINKTYPE_LINUX_LAPD

REPO = Path(__file__).resolve().parent.parent
SABME_P = 0x7F  # SABME with the P bit set: how the user side opens the link


def test_dchannel_socket_and_pcap(tmp_path: Path) -> None:
    listen_path = str(tmp_path / "dchan0")
    pcap_path = tmp_path / "d.pcap"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(listen_path)
    server.listen(1)
    server.settimeout(10)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--dchannel", f"0={listen_path}",
         "--pcap", str(pcap_path), "--demo-plan"],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("/dev/pts/")
        peer, _ = server.accept()
        peer.settimeout(10)
        packet = peer.recv(1024)
        frame, check = packet[:-2], packet[-2:]
        # SAPI 0 (C/R = 0 from the user side), TEI 0, SABME: and a real FCS behind it.
        assert frame == bytes([0x00, 0x01, SABME_P])
        assert check == fcs(frame)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        peer.close()
    finally:
        proc.kill()
        proc.wait()
        server.close()
    data = pcap_path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, linktype) == (0xA1B2C3D4, LINKTYPE_LINUX_LAPD)
    first_len = struct.unpack_from("<I", data, 24 + 8)[0]
    first = data[24 + 16: 24 + 16 + first_len]
    assert first[16:] == bytes([0x00, 0x01, SABME_P])  # after the 16-byte pseudo-header


def test_bad_dchannel_argument_is_a_usage_error(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for spec in ("nonsense", f"0={tmp_path / 'nobody-listens'}"):
        proc = subprocess.run(
            [sys.executable, "-m", "firmware_sim", "--dchannel", spec],
            capture_output=True, env=env, text=True, timeout=30,
        )
        assert proc.returncode == 2
        assert "--dchannel" in proc.stderr
