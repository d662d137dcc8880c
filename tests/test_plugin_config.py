"""The configurable fixtures: the telecard_sim marker shapes `sim_card`, and --telecard-sim
points `sim_card`/`card` at a standalone card's control socket (exercised with pytester)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import subprocess_env

pytest_plugins = ["pytester"]

PLAN = """
[routes]
"555" = ["Busy", { outcome = "Answer", after = 0.05 }]

[[calls]]
at = 0.1
to = "2000"
from = "0123"
"""

MARKED = """
import pytest
from firmware_sim.network import Busy, NoResponse
from telecard import Cause, State

pytestmark = pytest.mark.telecard_sim(line="T1", timers={"T303": 0.2})

@pytest.mark.telecard_sim(spans=2, role="NT")
def test_shape_merges_module_and_test_markers(sim_card, card):
    assert (sim_card.spans, sim_card.line, sim_card.role) == (2, "T1", "NT")
    assert len(card.spans) == 2
    assert sim_card.network.lookup("3301") == Busy()  # the demo plan, by default

def test_module_marker_alone(sim_card, card):
    assert (sim_card.spans, sim_card.line, sim_card.role) == (1, "T1", "TE")
    sim_card.network.route("999", NoResponse())
    channel = card.free_channel()
    channel.call("999")  # T303 of 0.2 s, twice: over in well under the default 8 s
    assert (channel.cause(), channel.details.raw_cause) == (Cause.TIMEOUT, 102)

@pytest.mark.telecard_sim(plan="plans/retry.toml")
def test_plan_relative_to_the_test_file(sim_card, card):
    incoming = card.wait_for_incoming_call(5)
    assert (incoming.details.call_to, incoming.details.call_from) == ("2000", "0123")
    channel = card.free_channel()
    assert channel.call("555") is State.IDLE
    assert channel.call("555") is State.ANSWERED
    assert sim_card.network.lookup("3301") != Busy()  # the plan replaces the demo plan

@pytest.mark.telecard_sim(plan=None)
def test_no_plan(sim_card, card):
    channel = card.free_channel()
    assert channel.call("3301") is State.IDLE
    assert channel.details.raw_cause == 1
"""

BAD_MARKERS = """
import pytest

@pytest.mark.telecard_sim(spans=2, lines="T1")
def test_unknown_keyword(sim_card):
    pass

@pytest.mark.telecard_sim(2)
def test_positional(sim_card):
    pass

@pytest.mark.telecard_sim(line="J1")
def test_bad_line(sim_card):
    pass

@pytest.mark.telecard_sim(timers=0.2)
def test_bad_timers(sim_card):
    pass

@pytest.mark.telecard_sim(plan="bad.toml")
def test_bad_plan(sim_card):
    pass

@pytest.mark.telecard_sim(spans=1, plan="plans/two_spans.toml")
def test_plan_beyond_the_card(sim_card):
    pass
"""


def test_marker_shapes_sim_card(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked=MARKED)
    (pytester.path / "plans").mkdir()
    (pytester.path / "plans" / "retry.toml").write_text(PLAN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.telecard_sim(spans=1, line='E1', role='TE'*"])
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--telecard-sim=PATH*"])


def test_bad_markers_fail_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad=BAD_MARKERS)
    (pytester.path / "bad.toml").write_text('[routes]\n"1" = "Bussy"\n')
    (pytester.path / "plans").mkdir()
    (pytester.path / "plans" / "two_spans.toml").write_text(
        '[[calls]]\nat = 0\nto = "2"\nspan = 1\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=6)
    result.stdout.no_fnmatch_line("*During handling*")
    result.stdout.fnmatch_lines_random([
        "*telecard_sim takes only the keywords spans, line, role, timers, network_timers, "
        "plan, not ?'lines'?",
        "*telecard_sim takes only the keywords*not ?2?",
        "*telecard_sim: line must be 'E1' or 'T1', not 'J1'*",
        "*telecard_sim: timers are a mapping of name to seconds, not 0.2*",
        "*telecard_sim(plan=...): */bad.toml: routes.1: unknown outcome 'Bussy'*",
        "*telecard_sim(plan=...): */two_spans.toml: calls?0?.span: span 1, but the card has 0-0",
    ])


def test_options_exclude_each_other(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--telecard-sim", "x", "--telecard-device", "y")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--telecard-device and --telecard-sim exclude each other*"])


# Runs unchanged in process and against the standalone card (two spans, demo plan).
HIL_SUITE = """
import time

import pytest
from firmware_sim.network import Answer, Busy, NoResponse
from telecard import Cause, State

def test_busy_from_the_demo_plan(card):
    channel = card.free_channel()
    assert channel.call("3301") is State.IDLE
    assert channel.cause() is Cause.BUSY

def test_retrying_dialer(sim_card, card):
    sim_card.network.route("3310", [Busy(), Answer(after=0.05)])
    channel = card.free_channel()
    assert channel.call("3310") is State.IDLE
    assert channel.call("3310") is State.ANSWERED

def test_incoming_call(sim_card, card):
    handle = sim_card.network.place_call("2000", from_="0123", span=1)
    incoming = card.wait_for_incoming_call(5)
    assert (incoming.details.span, incoming.details.call_from) == (1, "0123")
    assert incoming.answer() is State.ANSWERED
    assert handle.wait(until="answered").answered
    handle.clear()
    assert incoming.wait_for_idle(5) is State.IDLE

@pytest.mark.telecard_sim(spans=2, plan="retry.toml")
def test_plan_on_the_card(sim_card, card):
    assert card.wait_for_incoming_call(5).details.call_to == "2000"
    channel = card.free_channel()
    assert channel.call("555") is State.IDLE
    assert channel.call("555") is State.ANSWERED

@pytest.mark.telecard_sim(spans=4)
def test_other_shape(sim_card):
    assert sim_card.spans == 4

@pytest.mark.telecard_sim(timers={"T303": 0.2})
def test_short_timers(sim_card, card):
    sim_card.network.route("999", NoResponse())
    channel = card.free_channel()
    started = time.monotonic()
    channel.call("999")  # T303 of 0.2 s, twice: over in well under the default 8 s
    assert (channel.cause(), channel.details.raw_cause) == (Cause.TIMEOUT, 102)
    assert time.monotonic() - started < 3
"""


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Path]:
    """A two-span standalone card on the demo plan serving a control socket."""
    control = tmp_path / "card.ctl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--spans", "2", "--demo-plan",
         "--control", str(control)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("/dev/"), proc.communicate()[1]
        yield control
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_suite_runs_against_a_standalone_card(
    pytester: pytest.Pytester, standalone: Path
) -> None:
    pytester.makepyfile(test_hil=HIL_SUITE)
    (pytester.path / "retry.toml").write_text(PLAN)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--telecard-sim", str(standalone))
    result.assert_outcomes(passed=4, skipped=2)
    result.stdout.fnmatch_lines_random([
        "*telecard_sim{'spans': 4} differs from the --telecard-sim card's "
        "{'spans': 2, 'line': 'E1', 'role': 'TE'}*",
        "*telecard_sim{'timers': {'T303': 0.2}} differs*",
    ])


def test_same_suite_in_process(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hil=HIL_SUITE.replace('span=1)', 'span=0)').replace(
        "== (1, ", "== (0, "))
    (pytester.path / "retry.toml").write_text(PLAN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
