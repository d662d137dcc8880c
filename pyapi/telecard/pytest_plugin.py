"""pytest plugin (entry point ``pytest11: telecard``): a simulated card and a Card for tests.

Fixtures:

``sim_card``
    a `firmware_sim.SimulatedCard` (one E1 span, user side) whose network emulator follows the
    demo numbering plan (``telecard --help``); script it further through
    ``sim_card.network.route(...)`` and ``sim_card.network.place_call(...)``. The marker
    ``@pytest.mark.telecard_sim(spans=2, line="T1", role="NT", timers={...}, plan=PATH)``
    shapes it for a test, class or module. With ``--telecard-sim PATH`` it is instead a
    `firmware_sim.remote.RemoteCard`: the control session of the standalone card serving PATH.
``card``
    a `telecard.Card` opened on ``sim_card``, or on real hardware with
    ``--telecard-device PATH``; closed after the test, which clears every call the test left up
    (also when it failed), so hardware is left idle.

With ``--telecard-device``, tests that use ``sim_card`` (directly or through another fixture)
or carry the ``needs_sim`` marker are skipped before any of their fixtures is set up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .card import Card

if TYPE_CHECKING:
    from firmware_sim import SimulatedCard
    from firmware_sim.plan import Plan
    from firmware_sim.remote import RemoteCard

_OPTION = "--telecard-device"
_SIM_OPTION = "--telecard-sim"
_MARKER = "telecard_sim"
_SKIP_REASON = "needs the simulated card, but --telecard-device selects real hardware"
#: What the telecard_sim marker takes (all keywords).
_MARKER_KEYS = ("spans", "line", "role", "timers", "network_timers", "plan")
#: Stands for a marker without plan=: the demo plan in process, the card's own plan remotely.
_DEFAULT_PLAN = object()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--telecard-device`` and ``--telecard-sim``."""
    group = parser.getgroup("telecard")
    group.addoption(
        _OPTION,
        dest="telecard_device",
        metavar="PATH",
        default=None,
        help="open the `card` fixture on this device (PATH or PATH?baud=N) instead of a "
        "simulated card; tests that need the simulator are skipped",
    )
    group.addoption(
        _SIM_OPTION,
        dest="telecard_sim",
        metavar="PATH",
        default=None,
        help="make `sim_card` the standalone card (python -m firmware_sim --control PATH) "
        "serving the control socket PATH, and open `card` on it",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``needs_sim`` and ``telecard_sim`` markers."""
    config.addinivalue_line(
        "markers", f"needs_sim: the test needs the simulated card (skipped with {_OPTION})"
    )
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(spans=1, line='E1', role='TE', timers=None, network_timers=None, "
        "plan=PATH): the shape, timers and plan file of the sim_card fixture (the nearest "
        "marker's keywords win)",
    )
    if config.getoption("telecard_device") and config.getoption("telecard_sim"):
        raise pytest.UsageError(f"{_OPTION} and {_SIM_OPTION} exclude each other")


def _device(config: pytest.Config) -> str | None:
    device: str | None = config.getoption("telecard_device")
    return device


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test that needs the simulator when ``--telecard-device`` selects hardware."""
    # Before any fixture is set up: a test asking for `card` ahead of `sim_card` must not open
    # the hardware (or fail to) before being skipped.
    if _device(item.config) is None:
        return
    uses_sim = "sim_card" in getattr(item, "fixturenames", ())
    if uses_sim or item.get_closest_marker("needs_sim") is not None:
        pytest.skip(_SKIP_REASON)


def _sim_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The telecard_sim markers' keywords, the nearest marker's winning."""
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(_MARKER))):
        unknown = sorted(marker.kwargs.keys() - set(_MARKER_KEYS))
        if marker.args or unknown:
            pytest.fail(
                f"{_MARKER} takes only the keywords {', '.join(_MARKER_KEYS)}, not "
                f"{list(marker.args) + unknown}",
                pytrace=False,
            )
        options.update(marker.kwargs)
    return options


def _plan(request: pytest.FixtureRequest, plan: object, spans: int, line: str) -> Plan | None:
    """The marker's plan, loaded and checked (a relative path is from the test's file)."""
    if plan is None:
        return None
    from firmware_sim.plan import PlanError, load

    if not isinstance(plan, str | os.PathLike):
        pytest.fail(f"{_MARKER}(plan=...) is a path, not {plan!r}", pytrace=False)
    path = Path(plan)
    try:
        loaded = load(path if path.is_absolute() else request.path.parent / path)
        loaded.check(spans, line)
    except PlanError as exc:
        error = str(exc)
    else:
        return loaded
    pytest.fail(f"{_MARKER}(plan=...): {error}", pytrace=False)  # outside: no chained report


@pytest.fixture(scope="session")
def _telecard_remote(request: pytest.FixtureRequest) -> Iterator[RemoteCard]:
    """The session's control session of the ``--telecard-sim`` card (one controller at a time:
    the whole run keeps one)."""
    from firmware_sim.remote import RemoteCard

    path: str = request.config.getoption("telecard_sim")
    with RemoteCard.connect(path) as remote:
        yield remote


@pytest.fixture
def sim_card(request: pytest.FixtureRequest) -> Iterator[SimulatedCard | RemoteCard]:
    """A `firmware_sim.SimulatedCard` shaped by the ``telecard_sim`` marker (default: one E1
    span, user side, the demo plan), or with ``--telecard-sim`` the standalone card's
    `firmware_sim.remote.RemoteCard`; skipped with ``--telecard-device``."""
    if _device(request.config) is not None:
        pytest.skip(_SKIP_REASON)
    options = _sim_options(request)
    plan_option = options.pop("plan", _DEFAULT_PLAN)
    if request.config.getoption("telecard_sim") is not None:
        remote: RemoteCard = request.getfixturevalue("_telecard_remote")
        shape = {"spans": remote.spans, "line": remote.line, "role": remote.role}
        wrong = {k: v for k, v in options.items() if k not in shape or shape[k] != v}
        if wrong:  # timers, or a shape the running card lacks: cannot be had remotely
            pytest.skip(f"{_MARKER}{wrong} differs from the {_SIM_OPTION} card's {shape}")
        plan = None if plan_option is _DEFAULT_PLAN else _plan(
            request, plan_option, remote.spans, remote.line)
        yield from _follow(plan, remote)
        return
    from firmware_sim import SimulatedCard
    from firmware_sim.demo_plan import DEMO

    try:
        sim = SimulatedCard(
            options.get("spans", 1),
            options.get("line", "E1"),
            role=options.get("role", "TE"),
            timers=_timers(options.get("timers")),
            network_timers=_timers(options.get("network_timers")),
        )
    except (TypeError, ValueError) as exc:
        error = str(exc)
    else:
        with sim:
            plan = DEMO if plan_option is _DEFAULT_PLAN else _plan(
                request, plan_option, sim.spans, sim.line)
            yield from _follow(plan, sim)
        return
    pytest.fail(f"{_MARKER}: {error}", pytrace=False)


def _timers(timers: Mapping[str, float] | None) -> Mapping[str, float] | None:
    if timers is not None and not isinstance(timers, Mapping):
        pytest.fail(f"{_MARKER}: timers are a mapping of name to seconds, not {timers!r}",
                    pytrace=False)
    return timers


def _follow(
    plan: Plan | None, sim: SimulatedCard | RemoteCard
) -> Iterator[SimulatedCard | RemoteCard]:
    """Yield `sim` following `plan`: its routes, and its calls for as long as the test runs."""
    if plan is None:
        yield sim
        return
    plan.install(sim.network)
    schedule = plan.start(sim.network) if plan.calls else None
    try:
        yield sim
    finally:
        if schedule is not None:
            schedule.stop()


@pytest.fixture
def card(request: pytest.FixtureRequest) -> Iterator[Card]:
    """A `telecard.Card` on ``sim_card``, or on the ``--telecard-device`` hardware; closing it
    after the test clears every call the test left up."""
    device = _device(request.config)
    if device is None:
        sim: SimulatedCard | RemoteCard = request.getfixturevalue("sim_card")
        device = sim.device_path
    with Card.open(device) as opened:
        yield opened
