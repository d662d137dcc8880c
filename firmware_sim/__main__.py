"""Run a simulated card: python -m firmware_sim --spans N --line E1|T1 [--role TE|NT] [--link PATH]
[--pcap PATH [--pcap-overwrite]] [--history N] [--dchannel SPAN=PATH ...]
[--plan FILE | --demo-plan] [--control PATH] [--monitor-ports N]

The first line of stdout is the pty path to open (the control port); each of the next N lines
is a monitor port's pty path (datasheet 4.6), monitor port 1 first. --link PATH also makes
PATH.monitor1 ... PATH.monitorN symlinks to them. Runs until SIGINT or SIGTERM.
"""

import argparse
import os
import secrets
import signal
import stat
import sys

from firmware_sim import regmap as rm
from firmware_sim.card import LINES, ROLES, SimulatedCard
from firmware_sim.control import ControlServer
from firmware_sim.isdn import connect_seqpacket
from firmware_sim.plan import PlanError, demo_path, load

#: Calls a standalone card's network emulator keeps by default: a card runs for days.
STANDALONE_HISTORY = 100
#: Read-only monitor ports a standalone card serves by default: `telecard monitor` and
#: `telecard status` at once, beside the application driving the card.
STANDALONE_MONITOR_PORTS = 2


def monitor_link(path: str, port: int) -> str:
    """The path --link PATH gives monitor port `port` (datasheet 4.6: PATH.monitorN)."""
    return f"{path}.monitor{port}"


def _make_link(path: str, target: str) -> None:
    """Point the symlink `path` at `target`. Only a stale link (a symlink into the pty
    directory, a card's, or one pointing nowhere) is replaced, atomically; anything else at
    `path` is refused."""
    try:
        os.symlink(target, path)  # fails rather than follow or replace whatever is there
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise SystemExit(f"firmware_sim: --link {path}: {exc.strerror}") from None
    try:
        st = os.lstat(path)
        old = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    except OSError as exc:
        raise SystemExit(f"firmware_sim: --link {path}: {exc.strerror}") from None
    if old is None:
        raise SystemExit(f"firmware_sim: --link {path}: exists and is not a symlink; "
                         "remove it or choose another path")
    if os.path.dirname(old) != os.path.dirname(target) and os.path.exists(path):
        raise SystemExit(f"firmware_sim: --link {path}: a symlink to {old}, not a card's; "
                         "remove it or choose another path")
    # An unpredictable name beside `path`: nobody can plant a file there for us to rename.
    tmp = os.path.join(os.path.dirname(path) or ".",
                       f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    try:
        os.symlink(target, tmp)
        os.replace(tmp, path)  # rename replaces the stale link itself, never its target
    except OSError as exc:
        raise SystemExit(f"firmware_sim: --link {path}: {exc.strerror}") from None


def _check_capture(path: str) -> None:
    """--pcap-overwrite: refuse anything at `path` but a regular file (it stays until
    `_replace_capture`)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SystemExit(f"firmware_sim: --pcap {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SystemExit(f"firmware_sim: --pcap {path}: not a regular file; not replaced")


def _staged_capture(path: str) -> str:
    """Where --pcap-overwrite captures until the card has started: an unpredictable name
    beside `path`, so the old capture survives a card that fails to start."""
    return os.path.join(os.path.dirname(path) or ".",
                        f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")


def _replace_capture(staged: str, path: str) -> None:
    """The card has started: its capture takes the place of the old one at `path`."""
    _check_capture(path)
    # rename replaces whatever is at `path` itself: were it swapped for a symlink meanwhile,
    # only the link would go, never its target
    os.replace(staged, path)


def _remove_stale_monitor_links(path: str, first: int, pty_dir: str) -> None:
    """Remove PATH.monitor`first` ... PATH.monitor15 where an earlier card left them (a symlink
    into the pty directory, or one pointing nowhere): an observer looks for this card's
    monitor ports there (datasheet 4.6) and would open a dead or reused pty. Anything else
    there is left alone."""
    for port in range(first, rm.MAX_MONITOR_PORTS + 1):
        link = monitor_link(path, port)
        try:
            old = os.readlink(link)
            if os.path.dirname(old) == pty_dir or not os.path.exists(link):
                os.unlink(link)
        except OSError:
            continue  # missing, not a symlink, or gone meanwhile


def _remove_link(path: str, target: str) -> None:
    try:
        if os.readlink(path) == target:
            os.unlink(path)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__)
    parser.add_argument("--spans", type=int, default=1, help=f"1-{rm.MAX_SPANS} (default 1)")
    parser.add_argument("--line", choices=sorted(LINES), default="E1")
    parser.add_argument("--role", choices=sorted(ROLES), default="TE")
    parser.add_argument("--link", metavar="PATH", help="make PATH a symlink to the device")
    parser.add_argument(
        "--pcap",
        metavar="PATH",
        help="capture every D-channel frame to the new pcapng file PATH, one interface per "
        "span; an existing file or symlink at PATH is refused",
    )
    parser.add_argument(
        "--pcap-overwrite",
        action="store_true",
        help="let --pcap replace an existing regular file (a symlink is still refused)",
    )
    parser.add_argument(
        "--history",
        metavar="N",
        type=int,
        default=STANDALONE_HISTORY,
        help="calls the network emulator keeps in its history, the newest "
        f"(default {STANDALONE_HISTORY}; 0 keeps none)",
    )
    parser.add_argument(
        "--dchannel",
        metavar="SPAN=PATH",
        action="append",
        default=[],
        help="hand SPAN's D-channel to the LAPD peer listening on the SOCK_SEQPACKET socket PATH",
    )
    plans = parser.add_mutually_exclusive_group()
    plans.add_argument(
        "--plan",
        metavar="FILE",
        help="follow the plan file FILE (TOML: routes and scheduled incoming calls; "
        "docs/testing.rst)",
    )
    plans.add_argument(
        "--demo-plan",
        action="store_const",
        dest="plan",
        const=demo_path(),
        help="follow the shipped demo plan, plans/demo.toml (3301 busy, ...)",
    )
    parser.add_argument(
        "--control",
        metavar="PATH",
        help="serve the control socket (docs/control.rst) on the Unix domain socket PATH",
    )
    parser.add_argument(
        "--monitor-ports",
        metavar="N",
        type=int,
        default=STANDALONE_MONITOR_PORTS,
        help="read-only monitor ports to serve for observers such as `telecard monitor` "
        f"(0-{rm.MAX_MONITOR_PORTS}, default {STANDALONE_MONITOR_PORTS}; datasheet 4.6)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.monitor_ports <= rm.MAX_MONITOR_PORTS:
        parser.error(f"--monitor-ports must be 0-{rm.MAX_MONITOR_PORTS}")
    if not 1 <= args.spans <= rm.MAX_SPANS:
        parser.error(f"--spans must be 1-{rm.MAX_SPANS}")
    if args.history < 0:
        parser.error("--history must be 0 or more")
    plan = None
    if args.plan is not None:
        try:  # before anything starts: a bad plan costs no card
            plan = load(args.plan)
            plan.check(args.spans, args.line)
        except PlanError as exc:
            parser.error(f"--plan {exc}")
    dchannels = {}
    for spec in args.dchannel:
        span, sep, path = spec.partition("=")
        if not sep or not span.isdigit() or not path:
            parser.error(f"--dchannel takes SPAN=PATH, not {spec!r}")
        try:
            dchannels[int(span)] = connect_seqpacket(path)
        except OSError as exc:
            parser.error(f"--dchannel {spec}: {exc.strerror or exc}")
    # Blocked before the card's thread starts, so only sigwait below receives them.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    for sig in stop_signals:
        signal.signal(sig, signal.SIG_DFL)  # an inherited SIG_IGN would discard them
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    capture = args.pcap
    if args.pcap and args.pcap_overwrite:
        _check_capture(args.pcap)
        capture = _staged_capture(args.pcap)
    try:
        sim = SimulatedCard(
            args.spans,
            args.line,
            role=args.role,
            dchannels=dchannels,
            pcap=capture,
            monitor_ports=args.monitor_ports,
        )
    except OSError as exc:
        if capture is None or exc.filename != capture:
            raise
        hint = "; pass --pcap-overwrite to replace it" if isinstance(exc, FileExistsError) else ""
        raise SystemExit(f"firmware_sim: --pcap {args.pcap}: {exc.strerror}{hint}") from None
    with sim as card:
        card.network.history = args.history
        if plan is not None:
            plan.install(card.network)
        control = None
        schedule = None
        made: list[tuple[str, str]] = []
        staged = capture != args.pcap
        try:
            if args.control:
                try:
                    control = ControlServer(card, args.control)
                except OSError as exc:
                    raise SystemExit(f"firmware_sim: --control {args.control}: {exc}") from None
            links = []
            if args.link:
                links = [(args.link, card.device_path)] + [
                    (monitor_link(args.link, port), path)
                    for port, path in enumerate(card.monitor_paths, 1)
                ]
            for link, target in links:
                _make_link(link, target)
                made.append((link, target))
            if args.link:
                _remove_stale_monitor_links(
                    args.link, len(card.monitor_paths) + 1, os.path.dirname(card.device_path)
                )
            if staged:
                _replace_capture(capture, args.pcap)
                staged = False
            print(card.device_path, *card.monitor_paths, sep="\n", flush=True)
            if plan is not None and plan.calls:
                schedule = plan.start(card.network)
            signal.sigwait(stop_signals)
        finally:
            if schedule is not None:
                schedule.stop()
            if control is not None:
                control.close()
            for link, target in made:
                _remove_link(link, target)
            if staged:  # the card never started: the old capture stays as it was
                try:
                    os.unlink(capture)
                except OSError:
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
