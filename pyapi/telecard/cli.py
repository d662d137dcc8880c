"""The `telecard` command: place a call, show a card's status, watch its events, list causes.

Without --device every command runs on an embedded simulated card whose network emulator
follows this demo numbering plan:

  3301  busy (cause 17)                        -> BUSY
  3302  answers; hung up after --hold seconds   -> NORMAL
  3303  rings and never answers                 -> TIMEOUT after --timeout seconds
  3304  switching equipment congestion (42)     -> CONGESTION
  other unallocated number (cause 1)            -> UNOBTAINABLE
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

from . import q850
from .card import Card
from .causes import NORMALISATION, Cause
from .channel import parse_number
from .device import Event
from .errors import TelecardError
from .registers import CardState, EventCode, MailboxStatus
from .states import State

_INTERRUPTED = 128  # plus the signal number: the shell's exit status for a signal
_NO_VALUE_ROWS = {
    Cause.OTHER: "0, every unassigned value, any non-ITU-T coding standard",
    Cause.ERROR: "no cause IE: device lost, firmware reset, card protocol error",
}


@contextlib.contextmanager
def open_card(device: str | None, out: TextIO) -> Iterator[Card]:
    """The card at `device`, or a card opened on an embedded simulated card (demo plan)."""
    if device is not None:
        with Card.open(device) as card:
            yield card
        return
    from firmware_sim.demo_plan import simulated_card

    print("(embedded simulated card, demo numbering plan: see telecard --help)", file=out)
    with simulated_card() as sim, Card.open(sim.device_path) as card:
        yield card


def _cmd_call(args: argparse.Namespace, out: TextIO) -> int:
    called = parse_number(args.number, "NUMBER")
    calling = parse_number(args.calling, "--from", allow_empty=True)
    with open_card(args.device, out) as card:
        channel = card.free_channel()
        if channel is None:
            print("telecard: no free channel", file=sys.stderr)
            return 1
        print(f"calling {called} on span {channel.span} channel {channel.number}", file=out)
        with channel, _signals_deferred() as signals:
            hung_up = threading.Event()

            def place() -> None:
                if channel.call(called, calling, seconds_timeout=args.timeout) is State.ANSWERED:
                    print(f"answered; hanging up after {args.hold:g} s", file=out)
                    hung_up.wait(args.hold)
                    channel.hang_up()

            # The call runs on a worker, and a signal is only noted where it lands, so it is
            # acted on here, between joins, never half-way through the library's bookkeeping.
            worker = threading.Thread(target=place, name="telecard call")
            worker.start()
            while worker.is_alive() and not signals:
                worker.join(0.1)
            if signals:
                hung_up.set()
                channel.hang_up()
                worker.join()
                name = signal.Signals(signals[0]).name
                print(f"telecard: interrupted by {name}; the call was cleared", file=sys.stderr)
                return _INTERRUPTED + signals[0]
            state, details, cause = channel.state(), channel.details, channel.cause()
        print(f"state:     {state}", file=out)
        print(f"cause:     {cause}", file=out)
        if details.raw_cause is None:
            print("raw cause: none", file=out)
        else:
            print(f"raw cause: {details.raw_cause} ({details.raw_cause_name})", file=out)
            print(
                f"location:  {details.cause_location} ({details.cause_location_name}),"
                f" sent by the {'network' if details.cause_source == 'remote' else 'card'}",
                file=out,
            )
    return 0


def _cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    with open_card(args.device, out) as card:
        info = card.device.info
        print(
            f"card: boot id {info.boot_id:#010x}, firmware {info.fw_version >> 8}."
            f"{info.fw_version & 0xFF}, {len(card.spans)} span(s)",
            file=out,
        )
        for span in card.spans:
            alarms = "none" if not span.alarms else str(span.alarms.name).replace("|", ",")
            print(
                f"span {span.index}: {span.line} {span.role}, alarms {alarms}, D-channel"
                f" {'up' if span.dchannel_up else 'down'}",
                file=out,
            )
            for channel in card.channels(span.index):
                state = channel.state()
                if state is not State.IDLE:
                    d = channel.details
                    print(
                        f"  channel {channel.number:2}: {state} {d.direction}"
                        f" to {d.call_to or '-'} from {d.call_from or '-'}",
                        file=out,
                    )
            busy = sum(1 for c in card.channels(span.index) if c.state() is not State.IDLE)
            print(f"  {len(span.channels) - busy} of {len(span.channels)} channels idle", file=out)
    return 0


def _name(kind: type[enum.IntEnum], value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return str(value)


def _format_event(event: Event) -> str:
    name = _name(EventCode, event.code)
    if event.code in (EventCode.STATE, EventCode.INCOMING, EventCode.CLEARED):
        arg = _name(CardState, event.arg)
    elif event.code == EventCode.COMMAND_DONE:
        arg = _name(MailboxStatus, event.arg)
    elif event.code == EventCode.SPAN:
        arg = "D-channel up" if event.arg else "D-channel down"
    else:
        arg = str(event.arg)
    where = "card" if event.span == 0xFF else f"span {event.span} ch {event.channel:2}"
    return f"{time.strftime('%H:%M:%S')} {where} {name} {arg} (seq {event.seq})"


def _cmd_monitor(args: argparse.Namespace, out: TextIO) -> int:
    with open_card(args.device, out) as card:
        lock = threading.Lock()
        stop = threading.Event()

        def show(event: Event) -> None:
            with lock:
                try:
                    print(_format_event(event), file=out, flush=True)
                except BrokenPipeError:  # `telecard monitor | head`: the reader has gone
                    stop.set()

        card.add_event_listener(show)
        demo = None
        if args.device is None:
            # Something to watch on the embedded card: one call to each demo number.
            demo = threading.Thread(target=_demo_calls, args=(card,), daemon=True)
            demo.start()
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        try:
            while not stop.wait(0.2):
                if _reader_gone(out):  # quiet card, and `| head` has what it wanted
                    break
                if card.lost:
                    print("telecard: the card's device was lost", file=sys.stderr)
                    return 1
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except KeyboardInterrupt:
            pass
    return 0


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
    with contextlib.suppress(TelecardError):
        for number in ("3301", "3302", "3304", "3399"):
            channel = card.free_channel()
            if channel is None:
                return
            with channel:
                channel.call(number, seconds_timeout=5)


def _cmd_causes(args: argparse.Namespace, out: TextIO) -> int:
    width = max(len(c.name) for c in Cause)
    for cause, values in NORMALISATION.items():
        print(f"{cause.name:<{width}}  {', '.join(map(str, values))}", file=out)
        if args.names:
            for value in values:
                print(f"{'':<{width}}    {value:3}  {q850.cause_name(value)}", file=out)
    for cause, text in _NO_VALUE_ROWS.items():
        print(f"{cause.name:<{width}}  {text}", file=out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telecard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    device_help = "card device path or PATH?baud=N (default: embedded simulated card)"

    call = sub.add_parser("call", help="place a call and report how it ended")
    call.add_argument("number", metavar="NUMBER", help="digits or a tel: URI")
    call.add_argument("--device", "-d", metavar="D", help=device_help)
    call.add_argument("--from", dest="calling", default="", metavar="N", help="calling number")
    call.add_argument(
        "--timeout", type=float, default=10.0, metavar="S",
        help="give up (TIMEOUT) unless answered within S seconds (default 10)",
    )
    call.add_argument(
        "--hold", type=float, default=1.0, metavar="S",
        help="hang up an answered call after S seconds (default 1)",
    )
    call.set_defaults(run=_cmd_call)

    status = sub.add_parser("status", help="spans, alarms, D-channels and busy channels")
    status.add_argument("--device", "-d", metavar="D", help=device_help)
    status.set_defaults(run=_cmd_status)

    monitor = sub.add_parser("monitor", help="print the card's events as they happen")
    monitor.add_argument("--device", "-d", metavar="D", help=device_help)
    monitor.add_argument(
        "--seconds", type=float, default=None, metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    monitor.set_defaults(run=_cmd_monitor)

    causes = sub.add_parser("causes", help="the Q.850 value -> Cause normalisation table")
    causes.add_argument("--names", action="store_true", help="list every value's Q.850 name")
    causes.set_defaults(run=_cmd_causes)
    return parser


class _Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwinds like Ctrl-C, so every `with` clears what it holds."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


_deferred: list[int] | None = None  # signals noted, not raised, while a call is placed


def _raise_signalled(signum: int, frame: FrameType | None) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `telecard` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("timeout", "hold", "seconds"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            parser.error(f"--{name} must not be negative")
    previous: dict[signal.Signals, signal._HANDLER] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _raise_signalled)
    try:
        result: int = args.run(args, sys.stdout)
    except ValueError as exc:
        parser.error(str(exc))
    except TelecardError as exc:
        print(f"telecard: {exc}", file=sys.stderr)
        return 1
    except _Signalled as exc:
        return _INTERRUPTED + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return result


if __name__ == "__main__":
    sys.exit(main())
