"""The pytest plugin's fixtures and option, exercised with pytester."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

APP_TESTS = """
import pytest
from telecard import Card, Cause, State

def test_busy(card):
    assert isinstance(card, Card)
    channel = card.free_channel()
    assert channel.call("3301") is State.IDLE
    assert channel.cause() is Cause.BUSY

def test_sim_scripting(sim_card, card):
    from firmware_sim.network import Reject
    sim_card.network.route("555", Reject(27))
    channel = card.free_channel()
    channel.call("555")
    assert channel.cause() is Cause.OUTOFORDER

@pytest.mark.needs_sim
def test_marked(card):
    assert card.spans

def test_card_before_sim_card(card, sim_card):
    # Skipped with --telecard-device before `card` opens the hardware.
    assert sim_card.device_path
"""


# One simulated card for the whole run, so a later test sees what an earlier one left behind.
SESSION_SIM_CONFTEST = """
import pytest
from firmware_sim.demo_plan import simulated_card

@pytest.fixture(scope="session")
def session_sim():
    with simulated_card() as sim:
        yield sim

@pytest.fixture
def sim_card(session_sim):
    return session_sim
"""

FAILING_MID_CALL = """
from telecard import State

offered = []

def test_fails_mid_call(sim_card, card):
    outgoing = card.free_channel()
    assert outgoing.call("3302") is State.ANSWERED  # the demo plan answers and holds
    offered.append(sim_card.network.place_call("100"))
    incoming = card.wait_for_incoming_call(5)
    assert incoming.answer() is State.ANSWERED
    raise AssertionError("application bug with two calls up")

def test_the_failed_test_left_no_call_up(sim_card):
    (placed,) = sim_card.network.received
    results = [handle.wait(5) for handle in (placed, *offered)]
    assert [(r.answered, r.cleared_by, r.cause) for r in results] == [(True, "card", 16)] * 2
"""


def test_entry_point_is_registered() -> None:
    # The plugin reaches application test suites only through this entry point (the
    # package must be installed, or its metadata on sys.path, for pytest to find it).
    (plugin,) = [ep for ep in entry_points(group="pytest11") if ep.name == "telecard"]
    assert plugin.value == "telecard.pytest_plugin"


def test_fixtures_on_the_simulator(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(APP_TESTS)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=4)


def test_card_fixture_clears_the_calls_of_a_failed_test(pytester: pytest.Pytester) -> None:
    """The `card` fixture closes its Card however the test ends, and closing clears every
    call (cause 16 from the card; the card's watchdog would give 41, and only after 10 s)."""
    pytester.makeconftest(SESSION_SIM_CONFTEST)
    pytester.makepyfile(FAILING_MID_CALL)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*application bug with two calls up*"])


def test_device_option_skips_simulator_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(APP_TESTS)
    result = pytester.runpytest_subprocess("--telecard-device", "/nonexistent/tty", "-rs")
    # test_busy opens the (missing) device and errors; the other three are skipped, with
    # reason, without touching the device (whatever order they ask for the fixtures in).
    result.assert_outcomes(skipped=3, errors=1)
    result.stdout.fnmatch_lines(["*needs the simulated card*--telecard-device*"])


def test_option_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--telecard-device=PATH*"])
