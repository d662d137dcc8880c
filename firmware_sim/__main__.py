"""Run a simulated card: python -m firmware_sim --spans N --line E1|T1 [--role TE|NT] [--link PATH]
[--pcap PATH] [--dchannel SPAN=PATH ...] [--demo-plan]

The first line of stdout is the pty path to open. Runs until SIGINT or SIGTERM.
"""

import argparse
import os
import signal
import sys

from firmware_sim import regmap as rm
from firmware_sim.card import LINES, ROLES, SimulatedCard
from firmware_sim.demo_plan import install
from firmware_sim.isdn import connect_seqpacket


def _make_link(path: str, target: str) -> None:
    """Point the symlink `path` at `target`, replacing an existing symlink atomically."""
    if os.path.lexists(path) and not os.path.islink(path):
        raise SystemExit(f"firmware_sim: {path} exists and is not a symlink")
    tmp = f"{path}.{os.getpid()}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, path)


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
    parser.add_argument("--pcap", metavar="PATH", help="capture every D-channel frame (pcap)")
    parser.add_argument(
        "--dchannel",
        metavar="SPAN=PATH",
        action="append",
        default=[],
        help="hand SPAN's D-channel to the LAPD peer listening on the SOCK_SEQPACKET socket PATH",
    )
    parser.add_argument(
        "--demo-plan", action="store_true", help="route the demo numbers (3301 busy, ...)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.spans <= rm.MAX_SPANS:
        parser.error(f"--spans must be 1-{rm.MAX_SPANS}")
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
    with SimulatedCard(
        args.spans, args.line, role=args.role, dchannels=dchannels, pcap=args.pcap
    ) as card:
        if args.demo_plan:
            install(card.network)
        if args.link:
            _make_link(args.link, card.device_path)
        try:
            print(card.device_path, flush=True)
            signal.sigwait(stop_signals)
        finally:
            if args.link:
                _remove_link(args.link, card.device_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
