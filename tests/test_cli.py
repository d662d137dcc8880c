"""The `telecard` command, run as a subprocess on its embedded simulated card."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_sim import SimulatedCard
from tests.conftest import subprocess_env


def telecard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telecard.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        check=False,
    )


@pytest.mark.parametrize(
    ("number", "extra", "lines"),
    [
        ("3301", [], ["state:     IDLE", "cause:     BUSY", "raw cause: 17 (User busy)",
                      "location:  4 (public network serving the remote user),"
                      " sent by the network"]),
        ("3302", ["--hold", "0.1"], ["answered; hanging up after 0.1 s", "cause:     NORMAL",
                                     "raw cause: 16 (Normal call clearing)",
                                     "location:  0 (user), sent by the card"]),
        ("3303", ["--timeout", "0.5"], ["cause:     TIMEOUT",
                                        "raw cause: 102 (Recovery on timer expiry)"]),
        ("3304", [], ["cause:     CONGESTION", "raw cause: 42 (Switching equipment congestion)"]),
        ("7777", [], ["cause:     UNOBTAINABLE", "raw cause: 1 (Unallocated (unassigned) number)",
                      "location:  2 (public network serving the local user), sent by the network"]),
    ],
)
def test_call_demo_plan(number: str, extra: list[str], lines: list[str]) -> None:
    result = telecard("call", number, *extra)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    for line in lines:
        assert line in out


def test_call_bad_number_is_a_usage_error() -> None:
    result = telecard("call", "sip:bob@example.com")
    assert result.returncode == 2
    assert "NUMBER" in result.stderr and "tel: URI" in result.stderr


def test_call_missing_device_fails_cleanly(tmp_path: Path) -> None:
    result = telecard("call", "3301", "--device", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr.startswith("telecard: ")


def test_status() -> None:
    result = telecard("status")
    assert result.returncode == 0, result.stderr
    assert "span 0: E1 TE, alarms none, D-channel up" in result.stdout
    assert "30 of 30 channels idle" in result.stdout


def test_monitor_shows_live_events() -> None:
    result = telecard("monitor", "--seconds", "1.5")
    assert result.returncode == 0, result.stderr
    assert "span 0 ch  1 STATE OUT_SETUP" in result.stdout
    assert "CLEARED IDLE" in result.stdout


def test_causes_table() -> None:
    result = telecard("causes", "--names")
    assert result.returncode == 0
    out = result.stdout.splitlines()
    assert "BUSY          17" in out
    assert "NORMAL        16, 26, 31" in out
    assert any(line.split() == ["17", "User", "busy"] for line in out)
    assert out[-2].startswith("OTHER ") and out[-1].startswith("ERROR ")


def test_help_documents_the_demo_plan() -> None:
    result = telecard("--help")
    assert result.returncode == 0
    for number in ("3301", "3302", "3303", "3304"):
        assert number in result.stdout


def test_monitor_into_a_closed_pipe_stops_quietly() -> None:
    env = subprocess_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "telecard.cli", "monitor", "--seconds", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `telecard monitor | head -1`
    assert proc.wait(timeout=20) == 0  # well before --seconds: it noticed the reader left
    assert "Traceback" not in proc.stderr.read()


def test_monitor_of_a_quiet_card_stops_when_its_reader_leaves(sim: SimulatedCard) -> None:
    """No event to write, so no BrokenPipeError to notice: it looks at the pipe itself."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "telecard.cli", "monitor", "--device", sim.device_path,
         "--seconds", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # the card it opened
    proc.stdout.close()
    assert proc.wait(timeout=5) == 0  # not at the next event, whenever that comes
    assert "Traceback" not in proc.stderr.read()


def test_installed_console_script() -> None:
    script = shutil.which("telecard")
    if script is None:
        pytest.skip("the telecard console script is not installed (pip install . installs it)")
    result = subprocess.run(
        [script, "call", "3301"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "cause:     BUSY" in result.stdout


def wait_until_open(pid: int, device: str) -> None:
    """Until process `pid` holds `device` open (so it is past Card.open)."""
    deadline = time.monotonic() + 20
    fds = Path(f"/proc/{pid}/fd")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == device for fd in fds.iterdir()):
                time.sleep(0.3)  # and has its event thread going
                return
        time.sleep(0.05)
    raise AssertionError(f"{pid} never opened {device}")


def test_monitor_ends_when_the_card_goes(tmp_path: Path) -> None:
    env = subprocess_env()
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert sim.stdout is not None
        device = sim.stdout.readline().strip()
        monitor = subprocess.Popen(
            [sys.executable, "-m", "telecard.cli", "monitor", "--device", device],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert monitor.stderr is not None
        wait_until_open(monitor.pid, device)
        sim.terminate()  # the card vanishes
        assert monitor.wait(timeout=20) == 1
        assert "device was lost" in monitor.stderr.read()
    finally:
        sim.kill()
        sim.wait()
