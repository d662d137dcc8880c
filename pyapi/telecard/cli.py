"""The `telecard` command: place a call, show a card's status, watch its events, clear calls
left up, list serial ports and the causes.

Without --device every command runs on an embedded simulated card whose network emulator
follows this demo numbering plan:

  3301  busy (cause 17)                        -> BUSY
  3302  answers; hung up after --hold seconds   -> NORMAL
  3303  rings and never answers                 -> TIMEOUT after --timeout seconds
  3304  switching equipment congestion (42)     -> CONGESTION
  other unallocated number (cause 1)            -> UNOBTAINABLE

`status` and `monitor` only look: with --device they watch the card through one of its
read-only monitor ports (D.monitor1, ...; datasheet 4.6), so they work while an application
drives it through D, and never change it.

Results go to stdout (one JSON object with --json; one per event for `monitor --json`);
progress, the embedded card's banner and errors go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import json
import logging
import queue
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final, TextIO, TypeVar

from . import __version__, q850
from .address import Number, parse_number
from .card import Card, Span
from .causes import NORMALISATION, WITHOUT_VALUE, Cause
from .channel import CallChannel, CallDetails
from .device import list_devices
from .errors import InvalidStateError, TelecardError, WrongPortError
from .events import Event, HostEventCode
from .registers import Alarm, Bearer, CardState, CauseSource, EventCode, Presentation, Screening
from .states import STATE_OF_CARD, State
from .statistics import CallStatistics, Outcomes, SpanCounters, SpanStatistics

_E = TypeVar("_E", bound=enum.IntEnum)
_INTERRUPTED = 128  # plus the signal number: the shell's exit status for a signal
_MAX_SECONDS = 7 * 24 * 3600  # longer than any wait a script means; far from overflowing waits
_PROGRESS: Final = {
    CardState.OUT_OVERLAP: "dialling",
    CardState.OUT_PROCEEDING: "proceeding",
    CardState.OUT_ALERTING: "ringing",
    CardState.ACTIVE: "answered",
}


class ExitStatus(enum.IntEnum):
    """The exit statuses of `telecard`, the one table of them (`call --help` and README list
    it). A call that was not answered exits with its Cause's status in CALL_STATUS."""

    _value_: int
    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitStatus:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, "answered, or cleared normally; hangup cleared every call it found"
    FAILED = 1, "any other Cause, or no free channel; hangup could not clear a call"
    USAGE = 2, "bad arguments"
    BUSY = 3, "the called user is busy"
    NOANSWER = 4, "the called user did not answer before the network gave up"
    UNOBTAINABLE = 5, "no such number or route"
    CONGESTION = 6, "the network is congested"
    TIMEOUT = 7, "not answered within --timeout, or the network's timer ran out"
    DEVICE = 8, "the device could not be opened, failed or was lost; the card refused"
    NOTHING = 9, "nothing there: hangup found no call up, devices found no port"


CALL_STATUS: Final[dict[Cause, ExitStatus]] = {
    Cause.NORMAL: ExitStatus.OK,
    Cause.ERROR: ExitStatus.DEVICE,
    Cause.BUSY: ExitStatus.BUSY,
    Cause.NOANSWER: ExitStatus.NOANSWER,
    Cause.UNOBTAINABLE: ExitStatus.UNOBTAINABLE,
    Cause.CONGESTION: ExitStatus.CONGESTION,
    Cause.TIMEOUT: ExitStatus.TIMEOUT,
}
"""The exit status of `telecard call` for each Cause of an unanswered call; FAILED for the
others. The one place that maps them (`call --help` lists it)."""


def call_status(cause: Cause, answered: bool) -> ExitStatus:
    """The exit status of `telecard call` for a call that ended with `cause`."""
    if answered and cause is not Cause.ERROR:
        return ExitStatus.OK
    return CALL_STATUS.get(cause, ExitStatus.FAILED)


def _exit_statuses() -> str:
    """The --help epilog listing ExitStatus, with the cause values behind each Cause."""
    lines = ["exit status:"]
    for status in ExitStatus:
        values = "".join(
            f" ({cause.name}: cause {', '.join(map(str, NORMALISATION[cause]))})"
            for cause, to in CALL_STATUS.items()
            if to is status and cause in NORMALISATION
        )
        lines.append(f"  {status.value:<5} {status.name:<13} {status.meaning}{values}")
    lines.append(
        f"  {_INTERRUPTED}+N {'':<13} interrupted by signal N (130 SIGINT, 143 SIGTERM);"
        " the call was cleared"
    )
    return "\n".join(lines)


class _UsageError(Exception):
    """An argument the parser could not judge alone; exits like argparse's own errors."""


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 to _MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= _MAX_SECONDS:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 to {_MAX_SECONDS} seconds")
    return value


def _count(text: str) -> int:
    """An argparse type: a number of digits, 0 to 32."""
    if not text.isascii() or not text.isdigit() or int(text) > 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 to 32 digits")
    return int(text)


def _say(text: str) -> None:
    """A progress or warning line on stderr; a closed stderr must not stop the command."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def open_card(
    device: str | None, *, keep_calls: bool = False, quiet: bool = False, observe: bool = False
) -> Iterator[Card]:
    """The card at `device`, or a card opened on an embedded simulated card (demo plan).

    `keep_calls`: leave the calls up on close. `observe` (the commands that only look): watch
    `device` through a monitor port, beside whatever drives it (datasheet 4.6); a control port
    with no monitor port beside it is opened as before, with keep_calls. (A card older than
    1.3 is refused either way, and a 1.3 control port too, with the driver's version error.)"""
    if device is not None:
        try:
            try:
                card = Card.open(device, keep_calls=keep_calls, observe=observe)
            except WrongPortError:
                # The control port itself, free, with no monitor port beside it: look through
                # it as before monitor ports.
                if not observe:
                    raise
                card = Card.open(device, keep_calls=True)
        except (ValueError, OverflowError) as exc:  # pyserial overflows on a huge ?baud=
            raise _UsageError(f"argument --device: {exc}") from None
        with card:
            yield card
        return
    from firmware_sim.demo_plan import simulated_card

    if not quiet:
        _say("(embedded simulated card, demo numbering plan: see telecard --help)")
    with simulated_card() as sim, Card.open(sim.device_path, keep_calls=keep_calls) as card:
        yield card


def _call_record(state: State, cause: Cause | None, details: CallDetails) -> dict[str, object]:
    """A call as JSON: every CallDetails field (octets in hex), its state, its Cause (None
    while it is up), the Q.850 names of its cause value and location, and the SIP response
    for a call that ended unanswered."""
    record: dict[str, object] = {
        "state": state.name,
        "cause": None if cause is None else cause.name,
    }
    for field in dataclasses.fields(details):
        value = getattr(details, field.name)
        if isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, Number):
            value = {
                f.name: _json_value(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.init
            }
        record[field.name] = _json_value(value)
    record["raw_cause_name"] = details.raw_cause_name or None
    record["cause_location_name"] = details.cause_location_name or None
    record["sip_status"] = _refusal_status(details)
    return record


def _refusal_status(details: CallDetails) -> int | None:
    """The SIP response a gateway answers an INVITE with when the call ended unanswered;
    None for a call answered (its end is a BYE) or without a cause."""
    return None if details.answered is not None else details.sip_status


def _json_value(value: object) -> object:
    """An enum as its name, anything else as it is."""
    return value.name if isinstance(value, enum.Enum) else value


def _option_enum(enum_type: type[_E]) -> dict[str, _E]:
    """The command-line spelling of each member: lower case, dashes."""
    return {member.name.lower().replace("_", "-"): member for member in enum_type}


_PRESENTATIONS: Final = _option_enum(Presentation)
_SCREENINGS: Final = _option_enum(Screening)
_BEARERS: Final = _option_enum(Bearer)


def _cmd_call(args: argparse.Namespace, out: TextIO) -> int:
    """`telecard call`: place a call, report how it ended, exit with its status."""
    try:
        called = parse_number(args.number, "NUMBER")
        calling = parse_number(args.calling, "--from", allow_empty=True)
        if args.presentation or args.screening:
            calling = dataclasses.replace(
                calling,
                presentation=_PRESENTATIONS[args.presentation or "allowed"],
                screening=_SCREENINGS[args.screening or "user-not-screened"],
            )
        bearer = _BEARERS[args.bearer]
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    say = (lambda text: None) if args.quiet else _say
    with open_card(args.device, quiet=args.quiet) as card:
        channel = card.free_channel()
        if channel is None:
            _say("telecard: no free channel")
            return ExitStatus.FAILED
        say(f"calling {called} on span {channel.span} channel {channel.number}")
        # Progress is only queued where it is learnt (the thread handing the events out, or
        # the call's worker) and said here: a stderr nobody reads stalls this loop, never
        # the call.
        news: queue.SimpleQueue[str] = queue.SimpleQueue()
        said: set[CardState] = set()
        card.add_event_listener(lambda event: _progress(channel, event, news.put, said))
        with channel, _signals_deferred() as signals:
            hung_up = threading.Event()
            failed: list[Exception] = []

            def place() -> None:
                try:
                    if args.overlap is None:
                        state = channel.call(
                            called, calling, seconds_timeout=args.timeout, bearer=bearer
                        )
                    else:
                        state = _dial_overlap(
                            channel, called, calling, bearer, args.overlap, args.timeout
                        )
                    if state is State.ANSWERED:
                        news.put(f"hanging up after {args.hold:g} s")
                        hung_up.wait(args.hold)
                        channel.hang_up()
                except Exception as exc:  # raised again on the main thread, never lost
                    failed.append(exc)

            # The call runs on a worker, and a signal is only noted where it lands, so it is
            # acted on here, between joins, never half-way through the library's bookkeeping.
            worker = threading.Thread(target=place, name="telecard call")
            worker.start()
            while worker.is_alive() and not signals:
                with contextlib.suppress(queue.Empty):
                    say(news.get(timeout=0.1))
            _say_queued(news, say)
            if signals:
                hung_up.set()
                channel.hang_up()
                worker.join()
                name = signal.Signals(signals[0]).name
                _say(f"telecard: interrupted by {name}; the call was cleared")
                return _INTERRUPTED + signals[0]
            if failed:
                raise failed[0]
            state, details, cause = channel.state(), channel.details, channel.cause()
    if args.json:
        print(json.dumps(_call_record(state, cause, details)), file=out)
    else:
        print(f"state:     {state}", file=out)
        print(f"cause:     {cause}", file=out)
        if details.raw_cause is None:
            print("raw cause: none", file=out)
        else:
            refusal = _refusal_status(details)
            sip = "" if refusal is None else f", SIP {refusal}"
            print(f"raw cause: {details.raw_cause} ({details.raw_cause_name}){sip}", file=out)
            print(
                f"location:  {details.cause_location} ({details.cause_location_name}),"
                f" sent by the {'network' if details.cause_source == 'remote' else 'card'}",
                file=out,
            )
    status = call_status(cause, details.answered is not None)
    if status is ExitStatus.DEVICE:
        _say("telecard: the card's device was lost")
    return status


def _dial_overlap(
    channel: CallChannel,
    called: Number,
    calling: Number,
    bearer: Bearer,
    first: int,
    timeout: float,
) -> State:
    """`telecard call --overlap`: the first digits in the SETUP, the others in INFORMATION with
    Sending Complete, then wait as call() does."""
    head = dataclasses.replace(called, digits=called.digits[:first])
    channel.start_call(head, calling, bearer=bearer, sending_complete=False)
    with contextlib.suppress(InvalidStateError):  # the network found the number complete
        channel.send_digits(called.digits[first:], sending_complete=True)
    return channel.wait_for_answer(timeout)


def _say_queued(news: queue.SimpleQueue[str], say: Callable[[str], None]) -> None:
    """Say the progress lines still queued in `news`."""
    with contextlib.suppress(queue.Empty):
        while True:
            say(news.get_nowait())


def _progress(
    channel: CallChannel, event: Event, say: Callable[[str], None], said: set[CardState]
) -> None:
    """Say how `channel`'s call proceeds, from the card's events (an event listener), each
    step once (each digit sent while dialling is an event of the same state)."""
    if event.code is not EventCode.STATE or (event.span, event.channel) != (
        channel.span,
        channel.number,
    ):
        return
    if event.card_state in _PROGRESS and event.card_state not in said:
        said.add(event.card_state)
        say(_PROGRESS[event.card_state])


def _alarm_names(alarms: Alarm) -> list[str]:
    """The names of the alarms raised in `alarms`."""
    return [str(alarm.name) for alarm in Alarm if alarm and alarm in alarms]


def _outcomes_record(outcomes: Outcomes) -> dict[str, object]:
    """Seizures, answers and the ratios of `outcomes` as JSON."""
    return {
        "seizures": outcomes.seizures,
        "answered": outcomes.answered,
        "effective": outcomes.effective,
        "asr": outcomes.asr,
        "ner": outcomes.ner,
    }


def _calls_record(calls: CallStatistics) -> dict[str, object]:
    """One direction's statistics as JSON (Q.850 values as string keys, JSON's only kind)."""
    return {
        "attempts": calls.attempts,
        "life": _outcomes_record(calls.life),
        "window": _outcomes_record(calls.window),
        "causes": {cause.name: n for cause, n in calls.causes.items()},
        "q850": {str(value): n for value, n in calls.q850.items()},
    }


def _statistics_record(stats: SpanStatistics) -> dict[str, object]:
    """A span's (or the card's) statistics as JSON, by direction."""
    return {
        "span": stats.span,
        "incoming": _calls_record(stats.incoming),
        "outgoing": _calls_record(stats.outgoing),
        "total": _calls_record(stats.total),
    }


def _ratio(value: float | None) -> str:
    """An ASR or NER as a percentage; "-" when there is no call to judge by."""
    return "-" if value is None else f"{value:.1%}"


def _statistics_lines(stats: SpanStatistics, window: float) -> Iterator[str]:
    """`status`'s lines for a span's statistics."""
    for direction, calls in (("incoming", stats.incoming), ("outgoing", stats.outgoing)):
        life, recent = calls.life, calls.window
        yield (
            f"  {direction}: {calls.attempts} attempt(s), {life.seizures} ended;"
            f" ASR {_ratio(life.asr)} NER {_ratio(life.ner)}; last {window / 60:g} min:"
            f" {recent.seizures} ended, ASR {_ratio(recent.asr)} NER {_ratio(recent.ner)}"
        )
        if calls.causes:
            causes = ", ".join(f"{c.name} {n}" for c, n in calls.causes.items())
            values = ", ".join(f"{v}: {n}" for v, n in calls.q850.items()) or "-"
            yield f"    causes {causes}; Q.850 {values}"


def _cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """`telecard status`: spans, alarms, calls up and statistics, as text or JSON."""
    # keep_calls: looking at a card must not clear the calls left up on it.
    with open_card(args.device, keep_calls=True, observe=True) as card:
        info = card.device.info
        spans: list[tuple[Span, list[tuple[State, CallDetails]], int]] = []
        for span in card.spans:
            channels = card.channels(span.index)
            calls = [(c.state(), c.details) for c in channels]
            down = sum(not c.in_service for c in channels)
            spans.append((span, [(s, d) for s, d in calls if s is not State.IDLE], down))
        stats = card.statistics()
    firmware = f"{info.fw_version >> 8}.{info.fw_version & 0xFF}"
    if args.json:
        record = {
            "boot_id": info.boot_id,
            "firmware": firmware,
            "spans": [
                {
                    "span": span.index,
                    "line": span.line.name,
                    "role": span.role.name,
                    "alarms": _alarm_names(span.alarms),
                    "dchannel_up": span.dchannel_up,
                    "channels": len(span.channels),
                    "idle": len(span.channels) - len(calls) - down,
                    "out_of_service": down,
                    "calls": [_call_record(state, None, d) for state, d in calls],
                }
                for span, calls, down in spans
            ],
            "statistics": {
                "window": stats.window,
                "spans": [_statistics_record(s) for s in stats.spans],
                "total": _statistics_record(stats.total),
            },
        }
        print(json.dumps(record), file=out)
        return ExitStatus.OK
    print(
        f"card: boot id {info.boot_id:#010x}, firmware {firmware}, {len(spans)} span(s)",
        file=out,
    )
    for span, calls, down in spans:
        alarms = ",".join(_alarm_names(span.alarms)) or "none"
        print(
            f"span {span.index}: {span.line} {span.role}, alarms {alarms}, D-channel"
            f" {'up' if span.dchannel_up else 'down'}",
            file=out,
        )
        for state, d in calls:
            print(
                f"  channel {d.channel:2}: {state} {d.direction}"
                f" to {d.call_to or '-'} from {d.call_from or '-'}",
                file=out,
            )
        idle = len(span.channels) - len(calls) - down
        unusable = f", {down} out of service (MAINTENANCE)" if down else ""
        print(f"  {idle} of {len(span.channels)} channels idle{unusable}", file=out)
        for line in _statistics_lines(stats.spans[span.index], stats.window):
            print(line, file=out)
    return ExitStatus.OK


def _clearing(event: Event) -> dict[str, object]:
    """The cause of the call a CLEARED event ended, as CallChannel records it."""
    registers = event.registers
    if registers is None:
        return {"cause": None}
    source = registers.cause_source
    return {
        "cause": None if event.cause is None else event.cause.name,
        "raw_cause": event.raw_cause,
        "raw_cause_name": event.raw_cause_name or None,
        "cause_location": event.cause_location,
        "cause_location_name": event.cause_location_name or None,
        "cause_source": None if source is CauseSource.NONE else source.name.lower(),
        "call_to": registers.called,
        "call_from": registers.calling,
    }


def _event_record(event: Event) -> dict[str, object]:
    """An event as JSON: its name, where, when it was received, and its argument by name
    (channel states as State names; CLEARING, which has none, as null)."""
    record: dict[str, object] = {"time": event.timestamp, "event": event.code.name}
    if event.code is HostEventCode.LOST:
        return record
    if event.span is not None:
        # A span event's channel is 0, as the card reports it.
        record.update(span=event.span, channel=event.channel or 0)
    record["seq"] = event.seq
    if event.code in (EventCode.STATE, EventCode.INCOMING, EventCode.CLEARED):
        state = event.card_state
        shown = None if state is None else STATE_OF_CARD.get(state)
        record["state"] = None if shown is None else shown.name
        record["card_state"] = str(event.arg) if state is None else state.name
        if event.code is EventCode.CLEARED:
            record.update(_clearing(event))
    elif event.code is EventCode.COMMAND_DONE:
        record["status"] = str(event.arg) if event.status is None else event.status.name
    elif event.code is EventCode.SPAN:
        record["dchannel_up"] = event.dchannel_up
    else:
        record["arg"] = event.arg
    return record


def _format_event(record: dict[str, object], received: float) -> str:
    """An event record as a line of text."""
    clock = time.strftime("%H:%M:%S", time.localtime(received))
    if record["event"] == HostEventCode.LOST.name:
        return f"{clock} card LOST: the card's device is gone"
    where = "card" if "span" not in record else f"span {record['span']} ch {record['channel']:2}"
    if "card_state" in record:
        arg = str(record["state"] or record["card_state"])
    elif "status" in record:
        arg = str(record["status"])
    elif "dchannel_up" in record:
        arg = "D-channel up" if record["dchannel_up"] else "D-channel down"
    else:
        arg = str(record["arg"])
    if record["event"] == EventCode.CLEARED.name:
        arg += f": {record['cause'] or 'cause unknown'}"
        if record.get("raw_cause") is not None:
            source = "network" if record["cause_source"] == "remote" else "card"
            arg += (
                f", cause {record['raw_cause']} ({record['raw_cause_name']}),"
                f" location {record['cause_location']} ({record['cause_location_name']}),"
                f" sent by the {source}"
            )
        elif record["cause"] is not None:
            arg += ", no cause value"
    return f"{clock} {where} {record['event']} {arg} (seq {record['seq']})"


def _cmd_monitor(args: argparse.Namespace, out: TextIO) -> int:
    """`telecard monitor`: print the card's events, and with --summary each span's calls every
    so often, until --seconds pass, the card goes (after its LOST event), the output's reader
    leaves or a signal comes (which propagates: exit 128+N)."""
    if args.metrics_addr is not None and args.metrics_port is None:
        raise _UsageError("argument --metrics-addr: needs --metrics-port")
    addr = "127.0.0.1" if args.metrics_addr is None else args.metrics_addr
    # keep_calls: watching a card must not clear the calls left up on it.
    with (
        open_card(args.device, keep_calls=True, observe=True) as card,
        card.events() as events,
        _metrics_served(card, args.metrics_port, addr),
    ):
        if args.device is None:
            # Something to watch on the embedded card: one call to each demo number.
            threading.Thread(target=_demo_calls, args=(card,), daemon=True).start()
        now = time.monotonic()
        deadline = None if args.seconds is None else now + args.seconds
        summary = None if args.summary is None else _Summary(card, args.summary, args.json, now)
        try:
            # The lines are written here, not on the thread handing the events out: a slow
            # reader of stdout makes the reader drop events, never the card's calls wait.
            while deadline is None or time.monotonic() < deadline:
                wait = 0.2 if summary is None else min(0.2, summary.due(time.monotonic()))
                event = events.get(timeout=wait)
                unheard = False  # the card is lost and this reader gets no LOST event
                if event is None and card.lost:
                    # The card's flag goes up just before its LOST event is handed out.
                    event = events.get(timeout=5)
                    unheard = event is None
                lines = []
                if event is not None:
                    record = _event_record(event)
                    lines.append(
                        json.dumps(record) if args.json else _format_event(record, event.timestamp)
                    )
                if summary is not None:
                    due = summary.lines(time.monotonic())
                    # The card's LOST line stays its last.
                    lost = event is not None and event.code is HostEventCode.LOST
                    lines = [*due, *lines] if lost else [*lines, *due]
                try:
                    for line in lines:
                        print(line, file=out, flush=True)
                except BrokenPipeError:  # `telecard monitor | head`: the reader has gone
                    break
                # Not `card.lost` alone: the flag may have gone up since this reader was
                # found empty, with the LOST event still to be printed.
                if unheard or (event is not None and event.code is HostEventCode.LOST):
                    _say("telecard: the card's device was lost")
                    return ExitStatus.DEVICE
                if not lines and _reader_gone(out):  # quiet card, and `| head` has it all
                    break
        finally:
            # Also on SIGINT/SIGTERM (_Signalled), which goes on to main() for its exit status.
            if events.dropped:
                _say(f"telecard: {events.dropped} events not shown: the output fell behind")
    return ExitStatus.OK


_TOP_CAUSES: Final = 3  # causes a text summary line names


class _Summary:
    """`monitor --summary`: every `period` seconds, a line per span with its calls since the
    previous one (the first: since the Card opened), the differences of `Card.statistics()`,
    and its ratios over the window."""

    def __init__(self, card: Card, period: float, as_json: bool, now: float) -> None:
        self._card = card
        self._period = period
        self._json = as_json
        self._next = now + period
        self._last = now  # when the previous summary was taken: what the next one covers
        spans = range(len(card.statistics().spans))
        self._previous = tuple(SpanCounters().snapshot(span) for span in spans)  # nothing yet

    def due(self, now: float) -> float:
        """Seconds until the next summary (0 when it is due)."""
        return max(0.0, self._next - now)

    def lines(self, now: float) -> list[str]:
        """The summary lines when one is due, else none."""
        if now < self._next:
            return []
        self._next += self._period
        if self._next <= now:  # after a stall (a stopped terminal, say): a period from now
            self._next = now + self._period
        stats, previous = self._card.statistics(), self._previous
        self._previous = stats.spans
        covered, self._last = now - self._last, now  # the period, or longer after a stall
        return [
            self._line(span, before, stats.window, covered)
            for span, before in zip(stats.spans, previous, strict=True)
        ]

    def _line(
        self, span: SpanStatistics, before: SpanStatistics, window: float, covered: float
    ) -> str:
        calls, old = span.total, before.total
        recent = Outcomes(
            calls.life.seizures - old.life.seizures,
            calls.life.answered - old.life.answered,
            calls.life.effective - old.life.effective,
        )
        changed = ((c, n - old.causes.get(c, 0)) for c, n in calls.causes.items())
        causes = sorted(((c, n) for c, n in changed if n), key=lambda item: -item[1])
        attempts = calls.attempts - old.attempts
        if self._json:
            return json.dumps(
                {
                    "time": time.time(),
                    "event": "SUMMARY",
                    "span": span.span,
                    "seconds": round(covered, 3),
                    "attempts": attempts,
                    "interval": _outcomes_record(recent),
                    "causes": {c.name: n for c, n in causes},
                    "window": {"seconds": window, **_outcomes_record(calls.window)},
                }
            )
        top = ", ".join(f"{c.name} {n}" for c, n in causes[:_TOP_CAUSES]) or "-"
        more = f" and {len(causes) - _TOP_CAUSES} more" if len(causes) > _TOP_CAUSES else ""
        clock = time.strftime("%H:%M:%S")
        return (
            f"{clock} span {span.span} SUMMARY last {covered:.3g} s: {attempts} attempt(s),"
            f" {recent.seizures} ended, {recent.answered} answered, ASR {_ratio(recent.asr)}"
            f" NER {_ratio(recent.ner)}; causes {top}{more}; last {window / 60:g} min:"
            f" {calls.window.seizures} ended, ASR {_ratio(calls.window.asr)}"
            f" NER {_ratio(calls.window.ner)}"
        )


@contextlib.contextmanager
def _metrics_served(card: Card, port: int | None, addr: str) -> Iterator[None]:
    """`monitor --metrics-port`: `card`'s metrics served over HTTP while monitor runs."""
    if port is None:
        yield
        return
    try:
        from . import metrics
    except ImportError as exc:
        raise _UsageError(f"argument --metrics-port: {exc}") from None
    try:
        server = metrics.serve(card, port, addr)
    except (OSError, ValueError) as exc:  # in use, not an address of this host, ...
        raise _UsageError(f"argument --metrics-port: {addr} port {port}: {exc}") from None
    host = f"[{addr}]" if ":" in addr else addr
    _say(f"serving metrics at http://{host}:{server.port}/metrics")
    with server:
        yield


def _period(text: str) -> float:
    """An argparse type: seconds between two things, more than 0."""
    value = _seconds(text)
    if not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not more than 0 seconds")
    return value


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port, 0 to 65535")
    return int(text)


def _reader_gone(out: TextIO) -> bool:
    """`out` is a pipe whose reader has closed it."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not backed by a file descriptor
        return False
    poller = select.poll()
    poller.register(fd, 0)
    return any(revents & select.POLLERR for _, revents in poller.poll(0))


def _demo_calls(card: Card) -> None:
    """One call to each demo number, for `monitor` on the embedded card to show."""
    with contextlib.suppress(TelecardError):
        for number in ("3301", "3302", "3304", "3399"):
            channel = card.free_channel()
            if channel is None:
                return
            with channel:
                channel.call(number, seconds_timeout=5)


def _cmd_hangup(args: argparse.Namespace, out: TextIO) -> int:
    """`telecard hangup`: clear the call on one channel, or every call, reporting each."""
    if args.all == (args.span is not None) or (args.span is None) != (args.channel is None):
        raise _UsageError("give SPAN and CHANNEL, or --all")
    # keep_calls: only the calls asked for are cleared, each reported.
    with open_card(args.device, keep_calls=True) as card:
        if args.all:
            channels = card.channels()
        else:
            try:
                channels = (card.channel(args.span, args.channel),)
            except ValueError as exc:
                raise _UsageError(str(exc)) from None
        up = [(c, c.state(), c.details) for c in channels if c.state() is not State.IDLE]
        if not up:
            _say("telecard: no call up")
            return ExitStatus.NOTHING
        failed = False
        for channel, state, d in up:
            call = f"{state} {d.direction} call to {d.call_to or '-'} from {d.call_from or '-'}"
            where = f"span {channel.span} channel {channel.number}"
            try:
                after = channel.hang_up()
            except TelecardError as exc:
                _say(f"telecard: {where}: {call} not cleared: {exc}")
                failed = True
                continue
            if after is State.IDLE:
                print(f"{where}: cleared {call}", file=out)
            else:
                _say(f"telecard: {where}: {call} not cleared, it is {after}")
                failed = True
        if card.lost:
            _say("telecard: the card's device was lost")
            return ExitStatus.DEVICE
    return ExitStatus.FAILED if failed else ExitStatus.OK


def _cmd_devices(args: argparse.Namespace, out: TextIO) -> int:
    """`telecard devices`: the serial ports a card may be on."""
    devices = list_devices()
    for device in devices:
        print(device, file=out)
    return ExitStatus.OK if devices else ExitStatus.NOTHING


def _cmd_causes(args: argparse.Namespace, out: TextIO) -> int:
    """`telecard causes`: the Q.850 value -> Cause table."""
    width = max(len(c.name) for c in Cause)
    for cause, values in NORMALISATION.items():
        print(f"{cause.name:<{width}}  {', '.join(map(str, values))}", file=out)
        if args.names:
            for value in values:
                print(f"{'':<{width}}    {value:3}  {q850.cause_name(value)}", file=out)
    for cause, text in WITHOUT_VALUE.items():
        print(f"{cause.name:<{width}}  {text}", file=out)
    return ExitStatus.OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telecard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log to stderr: -v link up/down, resets, adopted calls; -vv also every command,"
        " channel state change and cause (warnings are logged without -v)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    device_help = "card device path or PATH?baud=N (default: embedded simulated card)"
    json_help = "write the result as JSON (see README)"

    call = sub.add_parser(
        "call",
        help="place a call and report how it ended",
        description="Place a call and report how it ended; the exit status tells the outcome."
        " Progress (dialling, proceeding, ringing, answered) goes to stderr.",
        epilog=_exit_statuses(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument(
        "number", metavar="NUMBER",
        help="digits, a tel: URI or a sip:/sips: URI with a telephone number (+: international)",
    )
    call.add_argument("--device", "-d", metavar="D", help=device_help)
    call.add_argument(
        "--from", dest="calling", default="", metavar="N",
        help="calling number, in the forms NUMBER takes",
    )
    call.add_argument(
        "--presentation", choices=tuple(_PRESENTATIONS),
        help="calling number presentation (restricted: withheld; default allowed)",
    )
    call.add_argument(
        "--screening", choices=tuple(_SCREENINGS),
        help="calling number screening (default user-not-screened)",
    )
    call.add_argument(
        "--bearer", choices=tuple(_BEARERS), default="speech",
        help="bearer capability (default speech)",
    )
    call.add_argument(
        "--timeout", type=_seconds, default=10.0, metavar="S",
        help="give up (TIMEOUT) unless answered within S seconds (default 10)",
    )
    call.add_argument(
        "--overlap", type=_count, default=None, metavar="N",
        help="dial overlap: N digits in the SETUP, the rest in INFORMATION (Q.931 5.1.3)",
    )
    call.add_argument(
        "--hold", type=_seconds, default=1.0, metavar="S",
        help="hang up an answered call after S seconds (default 1)",
    )
    call.add_argument("--json", action="store_true", help=json_help)
    call.add_argument(
        "--quiet", "-q", action="store_true",
        help="no progress lines and no banner on stderr (errors only)",
    )
    call.set_defaults(run=_cmd_call, parser=call)

    status = sub.add_parser("status", help="spans, alarms, D-channels and busy channels")
    status.add_argument("--device", "-d", metavar="D", help=device_help)
    status.add_argument("--json", action="store_true", help=json_help)
    status.set_defaults(run=_cmd_status, parser=status)

    monitor = sub.add_parser("monitor", help="print the card's events as they happen")
    monitor.add_argument("--device", "-d", metavar="D", help=device_help)
    monitor.add_argument(
        "--seconds", type=_seconds, default=None, metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    monitor.add_argument("--json", action="store_true", help="one JSON object per event")
    monitor.add_argument(
        "--summary", type=_period, default=None, metavar="S",
        help="every S seconds, a line per span: attempts, answers, ASR and NER since the"
        " previous one, its top causes, and ASR and NER over the last 15 minutes",
    )
    monitor.add_argument(
        "--metrics-port", type=_port, default=None, metavar="PORT",
        help="serve the card's Prometheus metrics on PORT (0: any free port) while monitoring"
        " (needs telecard[metrics])",
    )
    monitor.add_argument(
        "--metrics-addr", default=None, metavar="ADDR",
        help="the address --metrics-port listens on (default 127.0.0.1: this host only)",
    )
    monitor.set_defaults(run=_cmd_monitor, parser=monitor)

    hangup = sub.add_parser(
        "hangup",
        help="clear a call left up on a channel, or every call",
        description="Clear the call on SPAN CHANNEL (timeslot), or every call with --all:"
        " calls left up, say, by a program that opened the card with keep_calls=True."
        f" Exit status {ExitStatus.OK.value} when every call found was cleared,"
        f" {ExitStatus.NOTHING.value} when there was none, {ExitStatus.FAILED.value} when"
        " one could not be cleared.",
    )
    hangup.add_argument("span", metavar="SPAN", type=int, nargs="?", help="span, from 0")
    hangup.add_argument("channel", metavar="CHANNEL", type=int, nargs="?", help="timeslot")
    hangup.add_argument("--all", action="store_true", help="every call on the card")
    hangup.add_argument("--device", "-d", metavar="D", help=device_help)
    hangup.set_defaults(run=_cmd_hangup, parser=hangup)

    devices = sub.add_parser(
        "devices", help="list the serial ports a card may be attached to",
        description="List the serial ports (UART, USB-CDC) a card may be attached to, one a"
        f" line; exit status {ExitStatus.NOTHING.value} when there is none.",
    )
    devices.set_defaults(run=_cmd_devices, parser=devices)

    causes = sub.add_parser("causes", help="the Q.850 value -> Cause normalisation table")
    causes.add_argument("--names", action="store_true", help="list every value's Q.850 name")
    causes.set_defaults(run=_cmd_causes, parser=causes)
    return parser


class _Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwinds like Ctrl-C, so every `with` clears what it holds."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


_deferred: list[int] | None = None  # signals noted, not raised, while a call is placed


def _raise_signalled(signum: int, frame: FrameType | None) -> None:
    """The SIGINT/SIGTERM handler: raise _Signalled, or note it while a call is placed."""
    if _deferred is None:
        raise _Signalled(signum)
    _deferred.append(signum)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """SIGINT and SIGTERM are noted in the list yielded instead of raised."""
    global _deferred
    _deferred = []
    try:
        yield _deferred
    finally:
        _deferred = None


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """The telecard loggers' records on stderr: WARNING and above, INFO with `verbosity` 1,
    DEBUG with 2 or more; as it was afterwards."""
    logger = logging.getLogger("telecard")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = logging.WARNING if not verbosity else logging.INFO if verbosity == 1 else logging.DEBUG
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `telecard` console script; returns an ExitStatus (or 128+signal)."""
    parser = _parser()
    args = parser.parse_args(argv)
    previous: dict[signal.Signals, signal._HANDLER] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _raise_signalled)
    try:
        with _logging(args.verbose):
            result: int = args.run(args, sys.stdout)
    except _UsageError as exc:
        args.parser.error(str(exc))
    except TelecardError as exc:
        _say(f"telecard: {exc}")
        return ExitStatus.DEVICE
    except _Signalled as exc:
        return _INTERRUPTED + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return result


if __name__ == "__main__":
    sys.exit(main())
