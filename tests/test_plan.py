"""Plan files (firmware_sim.plan): routes and scheduled incoming calls as TOML data, the shipped
demo plan, and `python -m firmware_sim --plan` refusing a bad plan before the card starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from firmware_sim import SimulatedCard
from firmware_sim.demo_plan import DEMO_PLAN, simulated_card
from firmware_sim.network import (
    Answer,
    Busy,
    CallHandle,
    Congestion,
    NoAnswer,
    NoResponse,
    RawCause,
    Reject,
)
from firmware_sim.plan import IncomingCall, PlanError, demo_path, load, parse
from telecard import Card, State
from tests.conftest import ROOT, free, subprocess_env

FULL = """
default = { outcome = "Reject", cause = 3, location = 2 }

[routes]
"3301" = "Busy"
"3302" = { outcome = "Answer", after = 0.5, hold = 10, overlap = true }
"3303" = ["Busy", { outcome = "Congestion", stage = "alerting" }, "NoAnswer"]
"3304" = { outcome = "Reject", cause = 21, diagnostic = "0a0b", stage = "inband" }
"3305" = { outcome = "RawCause", octets = "8090ff" }
"3306" = "RawCause"
"3307" = "NoResponse"

[[calls]]
at = 2
to = "2000"

[[calls]]
at = 0.5
to = "2001"
from = "0123"
span = 1
timeslot = 5
hold = 1.5
exclusive = false
"""


def test_every_form_reads_as_the_network_module_builds_it() -> None:
    plan = parse(FULL, "full.toml")
    assert plan.default == Reject(3, location=2)
    assert plan.routes == {
        "3301": Busy(),
        "3302": Answer(after=0.5, hold=10.0, overlap=True),
        "3303": (Busy(), Congestion(stage="alerting"), NoAnswer()),
        "3304": Reject(21, diagnostic=b"\x0a\x0b", stage="inband"),
        "3305": RawCause(b"\x80\x90\xff"),
        "3306": RawCause(None),
        "3307": NoResponse(),
    }
    assert plan.calls == (  # in the order they are due
        IncomingCall(0.5, "2001", "0123", span=1, timeslot=5, hold=1.5, exclusive=False),
        IncomingCall(2.0, "2000"),
    )
    plan.check(spans=2, line="T1")


def _error(text: str) -> PlanError:
    with pytest.raises(PlanError) as info:
        parse(text, "bad.toml")
    return info.value


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("routes = 3", "routes", "must be a table"),
        ("calls = 3", "calls", "must be an array of tables"),
        ("[route]", "route", "unknown key; a plan has routes, calls and default"),
        ('[routes]\n"33a" = "Busy"', "routes.33a", "must be a number of digits"),
        ('[routes]\n"1" = 17', "routes.1", "an outcome is a name or a table, not 17"),
        ('[routes]\n"1" = { cause = 17 }', "routes.1", 'needs outcome = "Answer"'),
        ('[routes]\n"1" = { outcome = 17 }', "routes.1.outcome", "must be a string, not 17"),
        ('[routes]\n"1" = "Bussy"', "routes.1", "unknown outcome 'Bussy'; one of Answer,"),
        ('[routes]\n"1" = { outcome = "Busy", cause = 3 }', "routes.1.cause",
         "Busy takes no 'cause' (takes: stage)"),
        ('[routes]\n"1" = { outcome = "NoAnswer", after = 3 }', "routes.1.after",
         "NoAnswer takes no 'after' (takes: none)"),
        ('[routes]\n"1" = { outcome = "Answer", after = "soon" }', "routes.1.after",
         "must be a number, not 'soon'"),
        ('[routes]\n"1" = { outcome = "Answer", after = true }', "routes.1.after",
         "must be a number, not True"),
        ('[routes]\n"1" = { outcome = "Answer", hold = -1 }', "routes.1.hold",
         "must be 0 or more, not -1"),
        ('[routes]\n"1" = { outcome = "Answer", overlap = 1 }', "routes.1.overlap",
         "must be true or false, not 1"),
        ('[routes]\n"1" = { outcome = "Reject", cause = 1.5 }', "routes.1.cause",
         "must be an integer, not 1.5"),
        ('[routes]\n"1" = { outcome = "Reject", cause = 1, diagnostic = "zz" }',
         "routes.1.diagnostic", "must be hex octets, not 'zz'"),
        ('[routes]\n"1" = "Reject"', "routes.1", "Reject needs cause"),
        ('[routes]\n"1" = { outcome = "Reject", cause = 300 }', "routes.1",
         "cause 300 is not 0-127"),
        ('[routes]\n"1" = { outcome = "Busy", stage = "ringing" }', "routes.1",
         "stage 'ringing' is not one of"),
        ('[routes]\n"1" = []', "routes.1", "a sequence needs at least one outcome"),
        ('[routes]\n"1" = ["Busy", "Nope"]', "routes.1[1]", "unknown outcome 'Nope'"),
        ('default = "Nope"', "default", "unknown outcome 'Nope'"),
        ("calls = [1]", "calls[0]", "a call is a table ([[calls]]), not 1"),
        ('[[calls]]\nat = 1\nto = "2"\nwhen = 3', "calls[0].when",
         "unknown key; a call takes at, to, from, span"),
        ('[[calls]]\nto = "2"', "calls[0]", "a call needs 'at'"),
        ("[[calls]]\nat = 1", "calls[0]", "a call needs 'to'"),
        ('[[calls]]\nat = -1\nto = "2"', "calls[0].at", "must be 0 or more"),
        ('[[calls]]\nat = nan\nto = "2"', "calls[0].at", "must be finite, not nan"),
        ('[[calls]]\nat = 1\nto = "2"\nhold = inf', "calls[0].hold", "must be finite"),
        ('[routes]\n"1" = { outcome = "Answer", after = inf }', "routes.1.after",
         "must be finite, not inf"),
        ('[routes]\n"1" = { outcome = "Answer", hold = -inf }', "routes.1.hold",
         "must be finite"),
        ('[routes]\n"1" = { outcome = "Reject", cause = 1, diagnostic = "%s" }' % ("00" * 254),
         "routes.1", "a diagnostic is at most 253 octets"),
        ('[routes]\n"1" = { outcome = "Reject", cause = 1, location = 16 }', "routes.1",
         "location 16 is not 0-15"),
        ('[[calls]]\nat = 1\nto = ""', "calls[0].to", "must be a number of digits"),
        ('[[calls]]\nat = 1\nto = "2"\nfrom = "+44"', "calls[0].from",
         "must be a number of digits"),
        ('[[calls]]\nat = 1\nto = "2"\nspan = -1', "calls[0].span", "must be 0 or more"),
        ('[[calls]]\nat = 1\nto = "2"\ntimeslot = "5"', "calls[0].timeslot",
         "must be an integer"),
        ('[[calls]]\nat = 1\nto = "2"\nexclusive = "no"', "calls[0].exclusive",
         "must be true or false"),
    ],
)
def test_a_bad_plan_names_file_key_and_reason(text: str, key: str, reason: str) -> None:
    error = _error(text)
    assert (error.path, error.key, error.line) == ("bad.toml", key, None)
    assert reason in error.reason
    assert str(error).startswith(f"bad.toml: {key}: ")


def test_malformed_toml_names_the_line() -> None:
    error = _error('[routes]\n"1" = "Busy"\n"2" = Busy\n')
    assert (error.key, error.line) == ("", 3)
    assert str(error) == "bad.toml: line 3: not valid TOML: Invalid value (column 7)"


@pytest.mark.parametrize(
    ("call", "spans", "line", "key", "reason"),
    [
        ("span = 2", 2, "E1", "calls[0].span", "span 2, but the card has 0-1"),
        ("timeslot = 16", 1, "E1", "calls[0].timeslot", "16 is not a B-channel of E1"),
        ("timeslot = 24", 1, "T1", "calls[0].timeslot", "24 is not a B-channel of T1"),
        ("timeslot = 0", 1, "E1", "calls[0].timeslot", "0 is not a B-channel of E1"),
    ],
)
def test_a_call_the_card_cannot_take_is_refused(
    call: str, spans: int, line: str, key: str, reason: str
) -> None:
    plan = parse(f'[[calls]]\nat = 0\nto = "2"\n{call}\n', "calls.toml")
    with pytest.raises(PlanError) as info:
        plan.check(spans, line)
    assert (info.value.key, info.value.reason) == (key, reason)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"missing\.toml: cannot read it: No such file"):
        load(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[routes]\n"1" = "Busy" # caf\xe9\n')
    with pytest.raises(PlanError, match=r"latin\.toml: not UTF-8: invalid continuation byte"):
        load(latin)


def test_the_demo_plan_is_its_shipped_file() -> None:
    path = Path(demo_path())
    assert path == ROOT / "firmware_sim" / "plans" / "demo.toml"
    assert set(tomllib.loads(path.read_text())["routes"]) == set(DEMO_PLAN)
    assert DEMO_PLAN == {"3301": Busy(), "3302": Answer(), "3303": NoAnswer(),
                         "3304": Congestion()}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "plans/*.toml" in config["tool"]["setuptools"]["package-data"]["firmware_sim"]
    assert "recursive-include firmware_sim/plans *.toml" in (ROOT / "MANIFEST.in").read_text()
    with simulated_card() as sim:
        assert sim.network.lookup("3301") == Busy()


def test_scheduled_calls_reach_the_application(tmp_path: Path) -> None:
    plan = parse(
        '[routes]\n"555" = ["Busy", "Answer"]\n'
        '[[calls]]\nat = 0.3\nto = "2000"\nfrom = "0123"\ntimeslot = 7\n'
        '[[calls]]\nat = 0\nto = "2001"\n',
        "sched.toml",
    )
    with SimulatedCard() as sim:
        plan.install(sim.network)
        schedule = plan.start(sim.network)
        try:
            # The first call is due at once but waits for the link, which comes up only now.
            with Card.open(sim.device_path) as card:
                first = card.wait_for_incoming_call(5)
                assert first.details.call_to == "2001"
                second = card.wait_for_incoming_call(5)
                assert (second.details.call_to, second.details.call_from) == ("2000", "0123")
                assert second.number == 7
                assert schedule.wait(5)
                assert [h.result.called for h in schedule.placed  # type: ignore[attr-defined]
                        ] == ["2001", "2000"]
                assert second.answer() is State.ANSWERED
                out = free(card)
                assert out.call("555") is State.IDLE
                assert out.call("555") is State.ANSWERED
        finally:
            schedule.stop()
    assert all(isinstance(h, CallHandle) for h in schedule.placed)


def _run_card(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_sim", *args],
        env=subprocess_env(), capture_output=True, text=True, timeout=30,
    )


def test_bad_plan_stops_the_card_before_it_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[routes]\n"3301" = { outcome = "Reject", cause = 300 }\n')
    result = _run_card("--plan", str(bad))
    assert (result.returncode, result.stdout) == (2, "")  # no pty path: no card
    assert f"--plan {bad}: routes.3301: cause 300 is not 0-127" in result.stderr
    assert "Traceback" not in result.stderr
    bad.write_text('[routes]\n"1" = \n')
    result = _run_card("--plan", str(bad))
    assert (result.returncode, result.stdout) == (2, "")
    assert f"--plan {bad}: line 2: not valid TOML: Invalid value (column 7)" in result.stderr
    beyond = tmp_path / "beyond.toml"
    beyond.write_text('[[calls]]\nat = 0\nto = "2"\nspan = 1\n')
    result = _run_card("--plan", str(beyond), "--spans", "1")
    assert result.returncode == 2
    assert "calls[0].span: span 1, but the card has 0-0" in result.stderr
    result = _run_card("--plan", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "absent.toml: cannot read it" in result.stderr
    result = _run_card("--plan", str(beyond), "--demo-plan")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


@pytest.mark.parametrize("option", ["--plan", "--demo-plan"])
def test_standalone_card_follows_its_plan(tmp_path: Path, option: str) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text('[routes]\n"3301" = ["Busy", "Answer"]\n[[calls]]\nat = 0.2\nto = "2000"\n')
    args = ["--plan", str(plan)] if option == "--plan" else ["--demo-plan"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        device = proc.stdout.readline().strip()
        assert device.startswith("/dev/"), proc.communicate()[1]
        with Card.open(device) as card:
            out = free(card)
            assert out.call("3301") is State.IDLE  # busy in both plans' first attempt
            if option == "--plan":
                assert out.call("3301") is State.ANSWERED
                out.hang_up()
                incoming = card.wait_for_incoming_call(5)
                assert incoming.details.call_to == "2000"
            else:
                assert out.call("3301") is State.IDLE  # the demo's 3301 stays busy
                assert card.wait_for_incoming_call(0.5) is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
