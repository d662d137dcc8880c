"""The `telecard` command, run as a subprocess on its embedded simulated card or on a simulated
card's pty."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_sim import SimulatedCard
from firmware_sim.demo_plan import simulated_card
from firmware_sim.network import Answer, CallHandle, Reject
from telecard import Card, Cause, State, __version__, list_devices
from telecard import cli as telecard_cli
from telecard.cli import ExitStatus
from tests.conftest import ROOT, free, subprocess_env, wait_for

TELECARD = [sys.executable, "-m", "telecard.cli"]


@pytest.fixture
def sim2() -> Iterator[SimulatedCard]:
    """A two-span E1 simulated card (demo plan)."""
    with simulated_card(spans=2) as card:
        yield card


def telecard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TELECARD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        check=False,
    )


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TELECARD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )


@contextlib.contextmanager
def lines_of(proc: subprocess.Popen[str]) -> Iterator[Callable[[Callable[[str], bool]], str]]:
    """`until(predicate)`: the next stdout line of `proc` for which `predicate` holds (each
    line read is also kept in `proc.seen`); `proc` is killed at the end."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()

    def until(predicate: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if predicate(line):
                return line

    try:
        yield until
    finally:
        proc.kill()
        proc.wait()


# -- call -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "extra", "status", "lines"),
    [
        ("3301", [], ExitStatus.BUSY,
         ["state:     IDLE", "cause:     BUSY", "raw cause: 17 (User busy), SIP 486",
          "location:  4 (public network serving the remote user), sent by the network"]),
        ("3302", ["--hold", "0.1"], ExitStatus.OK,
         ["cause:     NORMAL", "raw cause: 16 (Normal call clearing)",
          "location:  0 (user), sent by the card"]),
        ("3303", ["--timeout", "0.5"], ExitStatus.TIMEOUT,
         ["cause:     TIMEOUT", "raw cause: 102 (Recovery on timer expiry), SIP 504"]),
        ("3304", [], ExitStatus.CONGESTION,
         ["cause:     CONGESTION", "raw cause: 42 (Switching equipment congestion), SIP 503"]),
        ("7777", [], ExitStatus.UNOBTAINABLE,
         ["cause:     UNOBTAINABLE", "raw cause: 1 (Unallocated (unassigned) number), SIP 404",
          "location:  2 (public network serving the local user), sent by the network"]),
    ],
)
def test_call_demo_plan(number: str, extra: list[str], status: int, lines: list[str]) -> None:
    result = telecard("call", number, *extra)
    assert result.returncode == status, result.stderr
    out = result.stdout.splitlines()
    for line in lines:
        assert line in out
    assert len(out) == 4  # the result only: progress goes to stderr
    assert f"calling {number} on span 0 channel 1" in result.stderr.splitlines()


def test_call_progress_goes_to_stderr_in_order() -> None:
    result = telecard("call", "3302", "--hold", "0")
    assert result.returncode == ExitStatus.OK, result.stderr
    progress = result.stderr.splitlines()
    assert progress[0].startswith("(embedded simulated card")  # the banner: not on stdout
    assert progress[1:] == [
        "calling 3302 on span 0 channel 1", "proceeding", "ringing", "answered",
        "hanging up after 0 s",
    ]
    assert "embedded" not in result.stdout and "answered" not in result.stdout


def test_call_overlap_dials_the_rest_in_information(sim: SimulatedCard) -> None:
    """`--overlap 2`: SETUP with 33, the network (no route for 33) acknowledges it, the card
    sends 02 with Sending Complete and the network routes 3302."""
    sim.network.route("3302", Answer())
    result = telecard("call", "3302", "--overlap", "2", "--hold", "0", "--device",
                      sim.device_path, "--json")
    assert result.returncode == ExitStatus.OK, result.stderr
    assert json.loads(result.stdout)["call_to"] == "3302"
    assert result.stderr.splitlines() == [
        "calling 3302 on span 0 channel 1", "dialling", "proceeding", "ringing", "answered",
        "hanging up after 0 s",
    ]
    assert sim.network.received[-1].result.called == "3302"
    refused = telecard("call", "3302", "--overlap", "x")
    assert refused.returncode == ExitStatus.USAGE and "--overlap" in refused.stderr


def test_call_progress_on_a_stalled_stderr_does_not_hold_the_call_up(
    sim: SimulatedCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress lines are written by the command's loop, not where the events are handed out:
    a stderr that blocks (a pipe nobody reads) stalls the loop, never the call."""
    unblock = threading.Event()
    said: list[str] = []

    def stalled_say(text: str) -> None:
        said.append(text)
        if text == "proceeding":
            unblock.wait(20)

    monkeypatch.setattr(telecard_cli, "_say", stalled_say)
    result: list[int] = []
    command = threading.Thread(
        target=lambda: result.append(
            telecard_cli.main(["call", "3302", "--hold", "0", "--device", sim.device_path])
        )
    )
    command.start()
    try:
        handle = sim.network.wait_received(1, timeout=5)[-1]
        call = handle.wait(5, until="cleared")
        assert call.answered and call.cleared_by == "card"  # hung up while stderr stalled
        wait_for(lambda: said[-1] == "proceeding")  # and the loop is stalled in it
    finally:
        unblock.set()
        command.join(20)
    assert result == [ExitStatus.OK]
    assert said[-3:] == ["ringing", "answered", "hanging up after 0 s"]


def test_call_status_comes_from_one_table() -> None:
    assert telecard_cli.call_status(Cause.BUSY, answered=False) is ExitStatus.BUSY
    assert telecard_cli.call_status(Cause.BUSY, answered=True) is ExitStatus.OK
    assert telecard_cli.call_status(Cause.ERROR, answered=True) is ExitStatus.DEVICE
    assert telecard_cli.call_status(Cause.REJECTED, answered=False) is ExitStatus.FAILED
    for cause, status in telecard_cli.CALL_STATUS.items():
        assert telecard_cli.call_status(cause, answered=False) is status


def test_call_quiet_leaves_stderr_empty() -> None:
    result = telecard("call", "3302", "--hold", "0", "--quiet")
    assert (result.returncode, result.stderr) == (ExitStatus.OK, "")
    assert "cause:     NORMAL" in result.stdout


def test_call_json_answered() -> None:
    before = time.time()
    result = telecard("call", "3302", "--hold", "0.1", "--json")
    assert result.returncode == ExitStatus.OK, result.stderr
    (line,) = result.stdout.splitlines()  # one object, nothing else, on stdout
    call = json.loads(line)
    assert {k: call[k] for k in (
        "state", "cause", "span", "channel", "direction", "call_to", "raw_cause",
        "raw_cause_name", "cause_location", "cause_location_name", "cause_source", "cause_ie",
        "sip_status",
    )} == {
        "state": "IDLE", "cause": "NORMAL", "span": 0, "channel": 1, "direction": "outgoing",
        "call_to": "3302", "raw_cause": 16, "raw_cause_name": "Normal call clearing",
        "cause_location": 0, "cause_location_name": "user", "cause_source": "local",
        "cause_ie": "8090", "sip_status": None,  # answered: its end is a BYE
    }
    assert before <= call["started"] <= call["answered"] <= call["ended"] <= time.time()
    assert call["ended"] - call["answered"] >= 0.1  # --hold
    assert "answered" in result.stderr  # progress stays on stderr


def test_call_json_not_answered() -> None:
    result = telecard("call", "3301", "--json")
    assert result.returncode == ExitStatus.BUSY, result.stderr
    call = json.loads(result.stdout)
    assert (call["cause"], call["raw_cause"], call["raw_cause_name"], call["sip_status"]) == (
        "BUSY", 17, "User busy", 486,
    )
    assert (call["cause_location"], call["cause_location_name"]) == (
        4, "public network serving the remote user",
    )
    assert call["answered"] is None and call["ended"] >= call["started"]


@pytest.mark.parametrize(
    ("cause", "status"),
    [(19, ExitStatus.NOANSWER), (18, ExitStatus.NOANSWER), (21, ExitStatus.FAILED),
     (27, ExitStatus.FAILED), (47, ExitStatus.CONGESTION), (102, ExitStatus.TIMEOUT),
     (16, ExitStatus.OK), (34, ExitStatus.FAILED)],
)
def test_call_exit_status_follows_the_cause(sim: SimulatedCard, cause: int, status: int) -> None:
    sim.network.route("5555", Reject(cause, stage="alerting"))
    result = telecard("call", "5555", "--device", sim.device_path, "--json")
    assert result.returncode == status, result.stderr
    assert json.loads(result.stdout)["raw_cause"] == cause


def test_call_on_a_card_that_goes_reports_a_device_error() -> None:
    env = subprocess_env()
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--demo-plan"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert sim.stdout is not None
        device = sim.stdout.readline().strip()
        proc = popen("call", "3303", "--timeout", "60", "--device", device, "--json")
        assert proc.stderr is not None
        while proc.stderr.readline() not in ("ringing\n", ""):
            pass
        sim.terminate()  # the card vanishes mid-call
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        sim.kill()
        sim.wait()
    assert proc.returncode == ExitStatus.DEVICE
    assert "device was lost" in stderr and "Traceback" not in stderr
    assert (json.loads(stdout)["state"], json.loads(stdout)["cause"]) == ("ERROR", "ERROR")


def test_call_bad_number_is_a_usage_error() -> None:
    result = telecard("call", "sip:bob@example.com")
    assert result.returncode == ExitStatus.USAGE  # argparse exits 2 too
    assert "NUMBER" in result.stderr and "tel: URI" in result.stderr


def test_call_missing_device_is_a_device_error(tmp_path: Path) -> None:
    result = telecard("call", "3301", "--device", str(tmp_path / "nope"), "--json")
    assert result.returncode == ExitStatus.DEVICE
    assert result.stderr.startswith("telecard: ") and result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["call", "3302", "--hold", value] for value in ("nan", "inf", "-1", "1e308", "1s")
    ] + [
        ["call", "3303", "--timeout", value] for value in ("nan", "-inf", "-0.5", "1e308")
    ] + [
        ["monitor", "--seconds", value] for value in ("nan", "inf", "-1", "1e308")
    ],
)
def test_seconds_must_be_finite_and_not_negative(args: list[str]) -> None:
    result = telecard(*args, timeout=20)
    assert result.returncode == ExitStatus.USAGE
    assert f"argument {args[-2]}: " in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("baud", ["99999999999999999999", "4294967296", "x", "0"])
def test_bad_baud_rate_is_a_usage_error(sim: SimulatedCard, baud: str) -> None:
    result = telecard("status", "--device", f"{sim.device_path}?baud={baud}", timeout=20)
    assert result.returncode == ExitStatus.USAGE
    assert "argument --device: " in result.stderr and "Traceback" not in result.stderr


def test_call_help_lists_every_exit_status() -> None:
    result = telecard("call", "--help")
    assert result.returncode == 0
    rows = {
        int(m[1]): m[2]
        for m in re.finditer(r"^ +(\d+) +([A-Z]+) ", result.stdout, re.MULTILINE)
    }
    assert rows == {status.value: status.name for status in ExitStatus}
    assert "BUSY: cause 17" in result.stdout and "128+N" in result.stdout


def test_readme_lists_every_exit_status() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = {
        int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| `([A-Z]+)` \|", readme, re.MULTILINE)
    }
    assert rows == {status.value: status.name for status in ExitStatus}


# -- status, monitor ----------------------------------------------------------------------


def test_status() -> None:
    result = telecard("status")
    assert result.returncode == 0, result.stderr
    assert "span 0: E1 TE, alarms none, D-channel up" in result.stdout
    assert "30 of 30 channels idle" in result.stdout
    assert "embedded" in result.stderr and "embedded" not in result.stdout


def test_status_json() -> None:
    result = telecard("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["firmware"] == "1.0" and isinstance(status["boot_id"], int)
    assert status["spans"] == [{
        "span": 0, "line": "E1", "role": "TE", "alarms": [], "dchannel_up": True,
        "channels": 30, "idle": 30, "out_of_service": 0, "calls": [],
    }]


def test_monitor_shows_state_names_and_causes() -> None:
    clearing = {
        "BUSY": "cause 17 (User busy), location 4 (public network serving the remote user),"
        " sent by the network",
        "NORMAL": "cause 16 (Normal call clearing), location 0 (user), sent by the card",
        "CONGESTION": "cause 42 (Switching equipment congestion), location 2 (public network"
        " serving the local user), sent by the network",
        "UNOBTAINABLE": "cause 1 (Unallocated (unassigned) number), location 2 (public"
        " network serving the local user), sent by the network",
    }
    proc = popen("monitor")
    seen: list[str] = []
    with lines_of(proc) as until:
        while len([line for line in seen if " CLEARED " in line]) < len(clearing):
            seen.append(until(lambda line: " span 0 ch  1 " in line))
    text = "\n".join(seen)
    for state in ("CALL_OUTGOING", "RING_OUTGOING", "ANSWERED", "CLEARING"):
        assert f"STATE {state} (seq " in text
    assert not re.search(r"OUT_SETUP|OUT_PROCEEDING|OUT_ALERTING|ACTIVE", text)
    cleared = [line for line in seen if " CLEARED " in line]
    for line, (cause, rest) in zip(cleared, clearing.items(), strict=True):
        assert f" CLEARED IDLE: {cause}, {rest} (seq " in line


def test_monitor_json() -> None:
    proc = popen("monitor", "--json")
    with lines_of(proc) as until:
        events: list[dict[str, object]] = []
        while [e["event"] for e in events].count("CLEARED") < 4:
            events.append(json.loads(until(lambda line: True)))
    states = {e["state"] for e in events if e["event"] == "STATE"}
    assert states <= {s.name for s in State} | {None}
    assert {"CALL_OUTGOING", "RING_OUTGOING", "ANSWERED"} <= states
    assert all(isinstance(e["time"], float) for e in events)
    (busy,) = [e for e in events if e["event"] == "CLEARED" and e["call_to"] == "3301"]
    assert busy == busy | {
        "span": 0, "channel": 1, "state": "IDLE", "cause": "BUSY", "raw_cause": 17,
        "raw_cause_name": "User busy", "cause_location": 4,
        "cause_location_name": "public network serving the remote user",
        "cause_source": "remote",
    }


def test_monitor_into_a_closed_pipe_stops_quietly() -> None:
    proc = popen("monitor", "--seconds", "30")
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `telecard monitor | head -1`
    assert proc.wait(timeout=20) == 0  # well before --seconds: it noticed the reader left
    assert "Traceback" not in proc.stderr.read()


def test_monitor_of_a_quiet_card_stops_when_its_reader_leaves(sim: SimulatedCard) -> None:
    """No event to write, so no BrokenPipeError to notice: it looks at the pipe itself."""
    proc = popen("monitor", "--device", sim.device_path, "--seconds", "30")
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # the card it opened
    proc.stdout.close()
    assert proc.wait(timeout=5) == 0  # not at the next event, whenever that comes
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_monitor_exits_128_plus_the_signal(sim: SimulatedCard, sig: signal.Signals) -> None:
    proc = popen("monitor", "--device", sim.device_path)
    assert proc.stderr is not None
    wait_until_open(proc.pid, sim.device_path)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 128 + sig
    assert "Traceback" not in proc.stderr.read()


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


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_monitor_ends_when_the_card_goes(as_json: bool) -> None:
    env = subprocess_env()
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert sim.stdout is not None
        device = sim.stdout.readline().strip()
        monitor = popen("monitor", "--device", device, *(["--json"] if as_json else []))
        assert monitor.stderr is not None and monitor.stdout is not None
        wait_until_open(monitor.pid, device)
        sim.terminate()  # the card vanishes
        assert monitor.wait(timeout=20) == ExitStatus.DEVICE
        assert "device was lost" in monitor.stderr.read()
        last = monitor.stdout.read().splitlines()[-1]
        if as_json:
            assert json.loads(last).keys() == {"time", "event"}
            assert json.loads(last)["event"] == "LOST"
        else:
            assert re.fullmatch(r"\d\d:\d\d:\d\d card LOST: the card's device is gone", last)
    finally:
        sim.kill()
        sim.wait()


def test_monitor_summaries_come_before_its_last_lost_line() -> None:
    """A summary due when the card goes is printed before the LOST line, which stays last:
    the LOST line is printed even when the card's flag went up between two looks."""
    env = subprocess_env()
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert sim.stdout is not None
        device = sim.stdout.readline().strip()
        # A summary due at every look: one is due when the LOST event is printed.
        monitor = popen("monitor", "--device", device, "--json", "--summary", "0.001")
        wait_until_open(monitor.pid, device)
        sim.terminate()  # the card vanishes
        out, _ = monitor.communicate(timeout=30)
        assert monitor.returncode == ExitStatus.DEVICE
        records = [json.loads(line) for line in out.splitlines()]
        assert records[-1]["event"] == "LOST" and records[-2]["event"] == "SUMMARY"
    finally:
        sim.kill()
        sim.wait()


def summaries(
    until: Callable[[Callable[[str], bool]], str],
    done: Callable[[dict[str, Any]], bool],
    seen: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The SUMMARY records of `monitor --json` (after those `seen` already) until one for which
    `done` holds."""
    seen = [] if seen is None else seen
    while not seen or not done(seen[-1]):
        seen.append(json.loads(until(lambda line: '"event": "SUMMARY"' in line)))
    return seen


def test_monitor_summary_of_the_demo_calls() -> None:
    """The embedded card places one call to each demo number: 3302 answered, 3301 busy (17),
    3304 congestion (42), 3399 unallocated (1). Summed over the summaries (each counts what
    happened since the one before), that is 4 attempts and 1 answered; ASR 25 %, NER 50 %."""
    with lines_of(popen("monitor", "--json", "--summary", "0.3")) as until:
        seen = summaries(until, lambda s: s["window"]["seizures"] == 4)
    assert {s["span"] for s in seen} == {0} and all(0.29 <= s["seconds"] < 5 for s in seen)
    assert sum(s["attempts"] for s in seen) == sum(s["interval"]["seizures"] for s in seen) == 4
    assert sum(s["interval"]["answered"] for s in seen) == 1
    assert sum(s["interval"]["effective"] for s in seen) == 2
    causes: dict[str, int] = {}
    for s in seen:
        for cause, n in s["causes"].items():
            causes[cause] = causes.get(cause, 0) + n
    assert causes == {"NORMAL": 1, "BUSY": 1, "CONGESTION": 1, "UNOBTAINABLE": 1}
    assert seen[-1]["window"] == {
        "seconds": 900.0, "seizures": 4, "answered": 1, "effective": 2, "asr": 0.25, "ner": 0.5
    }
    with lines_of(popen("monitor", "--summary", "0.3")) as until:
        line = until(lambda line: "SUMMARY" in line and "15 min: 4 ended" in line)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d span 0 SUMMARY last [\d.]+ s: \d attempt\(s\), \d ended, \d answered,"
        r" ASR (-|\d+\.\d%) NER (-|\d+\.\d%); causes (-|[A-Z ,\d]+( and \d more)?);"
        r" last 15 min: 4 ended, ASR 25.0% NER 50.0%",
        line,
    ), line


def test_monitor_summary_per_span(sim2: SimulatedCard) -> None:
    """Incoming calls on span 1 of a two-span card, which the network clears before anyone
    answers: with cause 21 (call rejected: the user's doing, in NER) and 16."""
    proc = popen("monitor", "--device", sim2.device_path, "--json", "--summary", "0.2")
    seen: list[dict[str, Any]] = []

    def incoming_on(timeslot: int) -> Callable[[str], bool]:
        def match(line: str) -> bool:
            record = json.loads(line)
            if record["event"] == "SUMMARY":
                seen.append(record)
            return record["event"] == "INCOMING" and record["channel"] == timeslot
        return match

    with lines_of(proc) as until:
        seen.append(json.loads(until(lambda line: '"event": "SUMMARY"' in line)))  # card open
        for timeslot, cause in ((5, 21), (6, 16)):
            sim2.network.place_call("3000", span=1, timeslot=timeslot)
            until(incoming_on(timeslot))
            sim2.network.clear(1, timeslot, cause)
        summaries(until, lambda s: s["span"] == 1 and s["window"]["seizures"] == 2, seen)
    assert seen[-2]["span"] == 0 and seen[-2]["window"]["asr"] is None  # one line per span
    span1 = [s for s in seen if s["span"] == 1]
    assert sum(s["attempts"] for s in span1) == 2
    assert sum(s["interval"]["effective"] for s in span1) == 1
    assert span1[-1]["window"] | {"seconds": 0} == {
        "seconds": 0, "seizures": 2, "answered": 0, "effective": 1, "asr": 0.0, "ner": 0.5
    }
    assert all(s["attempts"] == 0 for s in seen if s["span"] == 0)


def test_monitor_summary_keeps_its_period_after_a_stall(tc: Card) -> None:
    summary = telecard_cli._Summary(tc, 1.0, True, 100.0)
    assert summary.due(100.25) == 0.75 and summary.lines(100.5) == []
    assert len(summary.lines(101.0)) == len(tc.statistics().spans)
    assert summary.lines(101.9) == []
    lines = summary.lines(150.0)  # long overdue (a stopped terminal): one summary,
    assert lines and all(json.loads(line)["seconds"] == 49.0 for line in lines)  # of 49 s,
    assert summary.lines(150.5) == [] and summary.due(150.5) == 0.5  # then a period on
    assert all(json.loads(line)["seconds"] == 1.0 for line in summary.lines(151.0))


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_monitor_summary_needs_a_period(value: str) -> None:
    result = telecard("monitor", "--summary", value)
    assert result.returncode == ExitStatus.USAGE and "--summary" in result.stderr


# -- hangup -------------------------------------------------------------------------------


def leave_calls_up(sim: SimulatedCard, count: int) -> list[CallHandle]:
    """`count` answered calls to 3302 left up on the card by a Card opened with keep_calls."""
    with Card.open(sim.device_path, keep_calls=True) as card:
        for _ in range(count):
            assert free(card).call("3302") is State.ANSWERED
    handles = sim.network.received[-count:]
    assert not any(h.result.cleared for h in handles)
    return handles


def test_status_shows_a_call_left_up_and_leaves_it(sim: SimulatedCard) -> None:
    (handle,) = leave_calls_up(sim, 1)
    result = telecard("status", "--device", sim.device_path)
    assert result.returncode == 0, result.stderr
    assert "  channel  1: ANSWERED outgoing to 3302 from -" in result.stdout
    assert "29 of 30 channels idle" in result.stdout
    (call,) = json.loads(telecard("status", "--device", sim.device_path, "--json").stdout)[
        "spans"][0]["calls"]
    assert (call["state"], call["cause"], call["channel"]) == ("ANSWERED", None, 1)
    assert not handle.result.cleared


def test_hangup_clears_a_call_left_up(sim: SimulatedCard) -> None:
    first, second = leave_calls_up(sim, 2)
    result = telecard("hangup", "0", "2", "--device", sim.device_path)
    assert result.returncode == ExitStatus.OK, result.stderr
    assert result.stdout == "span 0 channel 2: cleared ANSWERED outgoing call to 3302 from -\n"
    assert (second.wait(5).cleared_by, second.result.cause) == ("card", 16)
    assert not first.result.cleared  # only the channel asked for
    again = telecard("hangup", "0", "2", "--device", sim.device_path)
    assert again.returncode == ExitStatus.NOTHING and "no call up" in again.stderr


def test_hangup_all(sim: SimulatedCard) -> None:
    handles = leave_calls_up(sim, 3)
    result = telecard("hangup", "--all", "--device", sim.device_path)
    assert result.returncode == ExitStatus.OK, result.stderr
    assert result.stdout.splitlines() == [
        f"span 0 channel {n}: cleared ANSWERED outgoing call to 3302 from -" for n in (1, 2, 3)
    ]
    assert [(h.wait(5).cleared_by, h.result.cause) for h in handles] == [("card", 16)] * 3
    again = telecard("hangup", "--all", "--device", sim.device_path)
    assert again.returncode == ExitStatus.NOTHING


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "give SPAN and CHANNEL, or --all"), (["0"], "give SPAN and CHANNEL, or --all"),
     (["0", "1", "--all"], "give SPAN and CHANNEL, or --all"),
     (["0", "16"], "span 0 channel 16 is not a bearer channel"),
     (["1", "1"], "span 1 channel 1 is not a bearer channel")],
)
def test_hangup_usage(sim: SimulatedCard, args: list[str], message: str) -> None:
    result = telecard("hangup", *args, "--device", sim.device_path)
    assert result.returncode == ExitStatus.USAGE and message in result.stderr


# -- devices, causes, help, version -------------------------------------------------------


def test_devices() -> None:
    result = telecard("devices")
    devices = list_devices()
    assert result.stdout.splitlines() == devices
    assert result.returncode == (ExitStatus.OK if devices else ExitStatus.NOTHING)


@pytest.mark.parametrize("ports", [["/dev/ttyACM0", "/dev/ttyUSB0"], []])
def test_devices_lists_each_port_or_says_there_is_none(
    ports: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever this machine has: the ports list_devices() finds, one a line, or NOTHING."""
    monkeypatch.setattr(telecard_cli, "list_devices", lambda: ports)
    status = telecard_cli.main(["devices"])
    assert capsys.readouterr().out.splitlines() == ports
    assert status == (ExitStatus.OK if ports else ExitStatus.NOTHING)


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


def test_version() -> None:
    result = telecard("--version")
    assert (result.returncode, result.stdout) == (0, f"telecard {__version__}\n")


def test_installed_console_script() -> None:
    script = shutil.which("telecard")
    if script is None:
        pytest.skip("the telecard console script is not installed (pip install . installs it)")
    result = subprocess.run(
        [script, "call", "3301"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == ExitStatus.BUSY, result.stderr
    assert "cause:     BUSY" in result.stdout
