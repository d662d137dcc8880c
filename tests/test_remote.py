"""The control socket: a card served by `python -m firmware_sim --control PATH` (or by a
ControlServer in this process) driven through firmware_sim.remote exactly as an embedded card."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from firmware_sim import SimulatedCard, q931
from firmware_sim.control import MAX_LINE, ControlServer
from firmware_sim.demo_plan import install
from firmware_sim.network import UNROUTED, Answer, Busy, Congestion, NoAnswer, Outcome, Reject
from firmware_sim.remote import ControlRefused, RemoteCard, SpanState
from telecard import Card
from tests.conftest import subprocess_env, wait_for
from tests.test_network_routes import dial_until_answered


class Standalone(NamedTuple):
    """A standalone card in another process: its control socket and its pty."""

    control: Path
    device: str


def _standalone(control: Path) -> tuple[subprocess.Popen[str], str]:
    """A standalone card with the demo plan serving `control`, and its pty."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--demo-plan", "--control", str(control)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("/dev/"):
        proc.kill()
        raise AssertionError(f"no card: {line!r} {proc.communicate()[1]}")
    return proc, line


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Standalone]:
    """A standalone card in another process, serving its control socket."""
    control = tmp_path / "card.ctl"
    proc, device = _standalone(control)
    try:
        yield Standalone(control, device)
    finally:
        _stop(proc)
    assert not control.exists()  # removed at exit


@pytest.fixture(params=["embedded", "remote"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Card]]:
    """(the simulated card, a Card on it): in this process, or in another behind --control."""
    if request.param == "embedded":
        with SimulatedCard() as sim:
            install(sim.network)
            with Card.open(sim.device_path) as card:
                yield sim, card
    else:
        control = request.getfixturevalue("standalone").control
        with RemoteCard.connect(str(control)) as remote, Card.open(remote.device_path) as card:
            yield remote, card


def test_remote_drives_like_embedded(rig: tuple[Any, Card]) -> None:
    sim, card = rig
    # a retrying dialer against a sequence route
    sim.network.route("5000", [Busy(), Answer(after=0.02)])
    assert sim.network.lookup("5000") == (Busy(), Answer(after=0.02))
    assert dial_until_answered(card, "5000", 3) == (2, [17])
    assert sim.network.attempts("5000") == 2
    first, second = (h.wait() for h in sim.network.wait_received(2))
    assert (first.cause, first.cleared_by, first.answered) == (17, "network", False)
    assert (second.cause, second.cleared_by, second.answered) == (16, "card", True)
    sim.network.unroute("5000")
    assert sim.network.lookup("5000") == sim.network.default

    # an incoming call answered by the application and cleared by the network
    handle = sim.network.place_call("2000", from_="0123456789", timeslot=7)
    with card.wait_for_incoming_call(5) as channel:
        assert channel.details.call_from == "0123456789"
        assert channel.answer() == channel.State.ANSWERED
        answered = handle.wait(until="answered")
        assert (answered.answered, answered.timeslot) == (True, 7)
        sim.network.status_enquiry(0, 7)  # the card answers STATUS; the call stays up
        handle.clear(cause=31)
        assert channel.wait_for_idle(5) == channel.State.IDLE
    result = handle.wait()
    assert (result.cleared, result.cleared_by, result.cause, result.location) == (
        True, "network", 31, q931.LOC_PUBLIC_REMOTE)

    # RESTART of the channel ends a call the application answered
    handle = sim.network.place_call("2001", timeslot=9)
    with card.wait_for_incoming_call(5) as channel:
        channel.answer()
        handle.wait(until="answered")
        sim.network.restart(0, 9)
        assert channel.wait_for_idle(5) == channel.State.IDLE
    assert handle.wait().cleared

    # an incoming call dialled overlap, offered once the card has its 4 digits
    card.set_overlap_digits(0, 4)
    handle = sim.network.place_call("2002", timeslot=11, overlap=1, sending_complete=False)
    with card.wait_for_incoming_call(5) as channel:
        assert channel.details.call_to == "2002"
        channel.reject()
    assert handle.wait().cause == 21
    card.set_overlap_digits(0, 0)

    # clearing by channel, and the history of the card's own calls
    sim.network.route("3400", NoAnswer())
    with card.free_channel() as channel:
        channel.start_call("3400")
        (*_, ringing) = sim.network.wait_received(3)
        assert ringing.wait(until="alerted").alerted
        sim.network.clear(0, ringing.result.timeslot, cause=17)
        assert channel.wait_for_idle(5) == channel.State.IDLE
    assert ringing.wait().cause == 17
    assert [h.result.called for h in sim.network.received] == ["5000", "5000", "3400"]

    # faults: lost and corrupted frames are recovered by the driver
    sim.faults.corrupt(1)
    sim.faults.drop(1)
    with card.free_channel() as channel:
        assert channel.call("3301") == channel.State.IDLE
        assert channel.details.raw_cause == 17
    assert sim.network.link_up(0)


def test_span_state_and_default(standalone: Standalone) -> None:
    with RemoteCard.connect(str(standalone.control)) as remote:
        assert (remote.spans, remote.line, remote.role) == (1, "E1", "TE")
        wait_for(lambda: remote.span(0).dchannel_up, what="D-channel up")
        assert remote.span(0) == SpanState(0, True, 0, True)
        assert remote.network.default == UNROUTED
        remote.network.default = Busy()
        assert remote.network.default == Busy()
        with pytest.raises(ValueError, match="span 3"):
            remote.span(3)


def test_callable_route_cannot_cross(standalone: Standalone) -> None:
    def route(called: str, calling: str, attempt: int) -> Outcome:
        return Answer()

    with RemoteCard.connect(str(standalone.control)) as remote:
        with pytest.raises(TypeError, match="cannot cross the control socket"):
            remote.network.route("1", route)  # type: ignore[arg-type]
        remote.network.route("1", [Busy(stage="alerting")])  # the session goes on
        assert remote.network.lookup("1") == (Busy(stage="alerting"),)


CONTROLLER = """
import json, sys
from firmware_sim.remote import RemoteCard

with RemoteCard.connect(sys.argv[1]) as sim:
    for n in range(2):
        # a channel each: the card may not have released the last one yet
        handle = sim.network.place_call("2000", from_=f"10{n}", timeslot=10 + n)
        r = handle.wait(timeout=10)
        print(json.dumps([r.calling, r.answered, r.cleared_by, r.cause]), flush=True)
"""


def test_controller_process_places_calls_the_application_answers(standalone: Standalone) -> None:
    with Card.open(standalone.device) as card:
        controller = subprocess.Popen(
            [sys.executable, "-c", CONTROLLER, str(standalone.control)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        try:
            answered = []
            for _ in range(2):
                with card.wait_for_incoming_call(10) as channel:
                    assert channel.answer() == channel.State.ANSWERED
                    answered.append(channel.details.call_from)
                    channel.hang_up()
            out, err = controller.communicate(timeout=20)
        finally:
            if controller.poll() is None:
                controller.kill()
                controller.communicate()
    assert controller.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        ["100", True, "card", 16],
        ["101", True, "card", 16],
    ]
    assert answered == ["100", "101"]


# --- the server in this process: access, refusal, the wire -----------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SimulatedCard, ControlServer]]:
    """An embedded card with a ControlServer on tmp_path/card.ctl."""
    with SimulatedCard() as sim, ControlServer(sim, tmp_path / "card.ctl") as server:
        yield sim, server


def test_socket_is_the_owners_only(served: tuple[SimulatedCard, ControlServer]) -> None:
    mode = os.stat(served[1].path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_second_controller_is_refused(served: tuple[SimulatedCard, ControlServer]) -> None:
    path = served[1].path
    first = RemoteCard.connect(path)
    with pytest.raises(ControlRefused, match=f"already has a controller \\(pid {os.getpid()}\\)"):
        RemoteCard.connect(path)
    first.network.route("1", Busy())  # the first is served on
    assert first.network.lookup("1") == Busy()
    first.close()

    def next_controller() -> bool:
        try:
            RemoteCard.connect(path).close()
        except ControlRefused:  # the server has not yet seen the first one go
            return False
        return True

    wait_for(next_controller, what="the card to take a new controller")


def test_live_socket_is_not_taken_over_but_a_stale_one_is(tmp_path: Path) -> None:
    path = tmp_path / "card.ctl"
    with SimulatedCard() as sim:
        with ControlServer(sim, path):
            with pytest.raises(FileExistsError, match="live"):
                ControlServer(sim, path)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()  # the file stays, nobody listens
        with ControlServer(sim, path), RemoteCard.connect(str(path)) as remote:
            assert remote.device_path == sim.device_path
        path.write_text("not a socket")
        with pytest.raises(FileExistsError, match="not a socket"):
            ControlServer(sim, path)
        assert path.read_text() == "not a socket"


def test_control_of_an_existing_file_is_refused_before_serving(tmp_path: Path) -> None:
    path = tmp_path / "card.ctl"
    path.write_text("mine")
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "--control", str(path)],
        capture_output=True, text=True, env=subprocess_env(), timeout=30,
    )
    assert proc.returncode != 0 and "not a socket" in proc.stderr
    assert path.read_text() == "mine"


NOBODY = 65534


def _connect_as(uid: int, path: str) -> str:
    """What a process of user `uid` gets from connecting to `path`: "EACCES", the server's
    refusal, or "served"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only switches user, connects and reports
        try:
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(path)
                except PermissionError:
                    answer = "EACCES"
                else:
                    answer = json.loads(sock.makefile().readline()).get("refused", "served")
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as report:
        answer = report.read()
    os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(os.getuid() != 0, reason="switching users needs root")
def test_other_users_are_kept_out() -> None:
    public = tempfile.mkdtemp(prefix="telecard-ctl-")
    try:
        os.chmod(public, 0o755)  # only the socket's own mode stands between them and it
        path = os.path.join(public, "card.ctl")
        with SimulatedCard() as sim, ControlServer(sim, path):
            assert _connect_as(NOBODY, path) == "EACCES"
            os.chmod(path, 0o666)  # even so, the peer's uid is checked
            assert _connect_as(NOBODY, path) == f"uid {NOBODY} is not the card's owner"
    finally:
        for name in os.listdir(public):
            os.unlink(os.path.join(public, name))
        os.rmdir(public)


def test_the_wire(served: tuple[SimulatedCard, ControlServer]) -> None:
    sim, server = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        stream = sock.makefile("rwb")

        def exchange(line: bytes) -> Any:
            stream.write(line + b"\n")
            stream.flush()
            return json.loads(stream.readline())

        hello = json.loads(stream.readline())
        assert hello == {"hello": "firmware_sim", "protocol": 1, "device": sim.device_path,
                         "spans": 1, "line": "E1", "role": "TE"}
        assert exchange(b'{"op":"route","number":"42","outcome":'
                        b'[{"type":"Reject","cause":17},{"type":"Answer","after":0.5}]}'
                        ) == {"ok": True, "result": None}
        assert sim.network.lookup("42") == (Reject(17), Answer(after=0.5))
        assert exchange(b'{"op":"lookup","number":"42"}')["result"][1] == {
            "type": "Answer", "after": 0.5, "hold": None, "overlap": False}
        for bad, error in (
            (b"not json", "ProtocolError"),
            (b'{"op":"reboot"}', "ProtocolError"),
            (b'{"op":"route","number":"42","outcome":{"type":"Bussy"}}', "ProtocolError"),
            (b'{"op":"route","number":"42","outcome":{"type":"Answer","after":NaN}}',
             "ProtocolError"),
            (b'{"op":"route","number":"42","outcome":{"type":"Answer","hold":-1}}',
             "ProtocolError"),
            (b'{"op":"route","number":"42","outcome":{"type":"Reject","cause":128}}',
             "ProtocolError"),
            (b'{"op":"route","number":"42","outcome":{"type":"Reject","cause":"17"}}',
             "ProtocolError"),
            (b'{"op":"route","number":"42","outcome":{"type":"Reject","cause":1,'
             b'"diagnostic":"%s"}}' % (b"00" * 254), "ProtocolError"),
            (b'{"op":"route","number":"42","outcome":{"type":"RawCause","octets":5}}',
             "ProtocolError"),
            (b'{"op":"place_call","to":"20a0"}', "ValueError"),
            (b'{"op":"place_call","to":2000}', "ValueError"),
            (b'{"op":"place_call","to":"2000","from":"+44"}', "ValueError"),
            (b'{"op":"place_call","to":"2000","hold":Infinity}', "ValueError"),
            (b'{"op":"place_call","to":"2000","timeslot":16}', "ValueError"),
            (b'{"op":"place_call","to":"2000","timeslot":"1"}', "TypeError"),
            (b'{"op":"place_call","to":"2000","span":1}', "ValueError"),
            (b'{"op":"place_call","to":"2000","exclusive":"no"}', "TypeError"),
            (b'{"op":"place_call","to":"2000","overlap":5}', "ValueError"),
            (b'{"op":"place_call","to":"2000","overlap":"1"}', "TypeError"),
            (b'{"op":"place_call","to":"2000","sending_complete":1}', "TypeError"),
            (b'{"op":"place_call","to":"2000","sending_complete":false}', "ValueError"),
            (b'{"op":"clear","timeslot":1,"cause":300}', "ValueError"),
            (b'{"op":"clear","timeslot":1,"location":16}', "ValueError"),
            (b'{"op":"clear","timeslot":99}', "ValueError"),
            (b'{"op":"wait_received","count":1,"timeout":NaN}', "ValueError"),
            (b'{"op":"wait_received","count":1,"timeout":Infinity}', "ValueError"),
            (b'{"op":"wait_received","count":1,"timeout":1e9}', "ValueError"),
            (b'{"op":"wait_received","count":1,"timeout":-1}', "ValueError"),
            (b'{"op":"fault","fault":"stall","args":[1e9]}', "ValueError"),
            (b'{"op":"route","number":"42","outcome":[]}', "ValueError"),
            (b'{"op":"route","number":"42"}', "KeyError"),
            (b'{"op":"wait","call":99}', "KeyError"),
            (b'{"op":"fault","fault":"explode"}', "ValueError"),
        ):
            answer = exchange(bad)
            assert (answer["ok"], answer["error"]) == (False, error), bad
        for name, outcome in (("Busy", Busy()), ("Congestion", Congestion(stage="alerting"))):
            line = b'{"op":"route","number":"43","outcome":{"type":"%s"%s}}' % (
                name.encode(), b',"stage":"alerting"' if name == "Congestion" else b"")
            assert exchange(line) == {"ok": True, "result": None}
            assert sim.network.lookup("43") == outcome  # the names plan files use
        placed = exchange(b'{"op":"place_call","to":"2000","from":"1","span":0}')["result"]
        assert placed["result"]["called"] == "2000"
        waited = exchange(b'{"op":"wait","call":%d,"timeout":0.01,"until":"answered"}'
                          % placed["call"])
        assert (waited["ok"], waited["error"]) == (False, "TimeoutError")
        for timeout in (b"NaN", b"Infinity", b"3601", b"-0.5", b'"5"'):
            waited = exchange(b'{"op":"wait","call":%d,"timeout":%s}' % (placed["call"], timeout))
            assert (waited["ok"], waited["error"]) in {(False, "ValueError"),
                                                        (False, "TypeError")}, timeout


def test_an_oversized_request_is_answered_once(
    served: tuple[SimulatedCard, ControlServer]
) -> None:
    """The rest of a too long line is skipped, so the session stays in step."""
    sim, server = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        stream = sock.makefile("rwb")
        stream.readline()
        stream.write(b'{"op":"attempts","number":"' + b"1" * (MAX_LINE * 2 + 5) + b'"}\n')
        stream.write(b'{"op":"attempts","number":"7"}\n')
        stream.flush()
        first = json.loads(stream.readline())
        assert (first["ok"], first["error"]) == (False, "ProtocolError")
        assert json.loads(stream.readline()) == {"ok": True, "result": 0}


def _wait_then_hang_up(path: str, request: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.makefile("rb").readline()
        sock.sendall(request + b"\n")
        time.sleep(0.1)  # the server is in the wait by now


@pytest.mark.parametrize("request_line", [
    b'{"op":"wait","call":CALL,"timeout":3600,"until":"answered"}',
    b'{"op":"wait_received","count":1000000,"timeout":3600}',
])
def test_a_controller_hanging_up_mid_wait_frees_the_card(
    served: tuple[SimulatedCard, ControlServer], request_line: bytes
) -> None:
    sim, server = served
    handle = sim.network.place_call("2000")  # nobody answers it
    with RemoteCard.connect(server.path) as remote:
        call = remote.network.place_call("2001").id
    del handle
    wait_for(lambda: server._controller is None, what="the first session to end")
    _wait_then_hang_up(server.path, request_line.replace(b"CALL", b"%d" % call))
    started = time.monotonic()

    def next_controller() -> bool:
        try:
            RemoteCard.connect(server.path).close()
        except ControlRefused:
            return False
        return True

    wait_for(next_controller, what="the card to take a new controller")
    assert time.monotonic() - started < 3


def test_an_interrupted_request_ends_the_session(
    served: tuple[SimulatedCard, ControlServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer left unread (Ctrl-C in a wait) must never be taken for the next one's."""
    sim, server = served
    remote = RemoteCard.connect(server.path)
    conn = remote._conn

    def interrupted() -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(conn, "_receive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        remote.network.attempts("1")
    monkeypatch.undo()
    with pytest.raises(ConnectionError):
        remote.network.attempts("1")
    assert conn._reader.closed
    remote.close()


def test_a_socket_of_another_user_is_refused(
    served: tuple[SimulatedCard, ControlServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client checks who serves the socket before it talks."""
    import firmware_sim.remote as remote_module

    real = os.getuid()
    monkeypatch.setattr(remote_module.os, "getuid", lambda: real + 1)
    with pytest.raises(ControlRefused, match=f"served by uid {real}"):
        RemoteCard.connect(served[1].path)
