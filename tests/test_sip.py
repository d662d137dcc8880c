"""telecard.sip against the RFCs, and reject()/CallDetails.sip_status on the simulated card.

The two RFC 3398 tables below are copies of the RFC's, laid out as it prints them; every row is
a test of its own, so the test is the RFC and telecard.sip is the code. (The RFC text itself
could not be reached from this project's machine: the rows were taken from quotations of it,
cross-checked where they disagree; see docs/causes.rst.)
"""

from __future__ import annotations

import re

import pytest

from firmware_sim import SimulatedCard
from firmware_sim.network import Answer, Reject
from telecard import Card, Cause, InvalidStateError, State, q850
from telecard.causes import reject_value
from telecard.sip import (
    Q850_TO_SIP,
    SIP_TO_Q850,
    Reason,
    parse_reason,
    q850_to_sip,
    reason_header,
    sip_to_q850,
)
from tests.conftest import free

# RFC 3398 §7.2.4.1, ISDN Cause Code to SIP Status Code Mapping.
RFC3398_7_2_4_1 = """
   ISUP Cause value                        SIP response
   ----------------                        ------------
   Normal event

   1   unallocated number                   404 Not Found
   2   no route to network                  404 Not found
   3   no route to destination              404 Not found
   16  normal call clearing                 --- (*)
   17  user busy                            486 Busy here
   18  no user responding                   408 Request Timeout
   19  no answer from the user              480 Temporarily unavailable
   20  subscriber absent                    480 Temporarily unavailable
   21  call rejected                        403 Forbidden (+)
   22  number changed (w/o diagnostic)      410 Gone
   22  number changed (w/ diagnostic)       301 Moved Permanently
   23  redirection to new destination       410 Gone
   26  non-selected user clearing           404 Not Found (=)
   27  destination out of order             502 Bad Gateway
   28  address incomplete                   484 Address incomplete
   29  facility rejected                    501 Not implemented
   31  normal unspecified                   480 Temporarily unavailable

   Resource unavailable

   34  no circuit available                 503 Service unavailable
   38  network out of order                 503 Service unavailable
   41  temporary failure                    503 Service unavailable
   42  switching equipment congestion       503 Service unavailable
   47  resource unavailable                 503 Service unavailable

   Service or option not available

   55  incoming calls barred within CUG     403 Forbidden
   57  bearer capability not authorized     403 Forbidden
   58  bearer capability not presently      503 Service unavailable
       available

   Service or option not implemented

   65  bearer capability not implemented    488 Not Acceptable here
   70  only restricted digital              488 Not Acceptable here
       information bearer capability
       is available (National use)
   79  service or option not                501 Not implemented
       implemented

   Invalid message

   87  user not member of CUG               403 Forbidden
   88  incompatible destination             503 Service unavailable

   Protocol error

   102 recovery of timer expiry             504 Gateway timeout
   111 protocol error                       500 Server internal error

   Interworking

   127 interworking unspecified             500 Server internal error

   (*) ISDN Cause 16 will usually result in a BYE or CANCEL
   (+) If the cause location is 'user' than the 6xx code could be given
       rather than the 4xx code (i.e., 403 becomes 603)
   (=) ANSI procedure
"""

# RFC 3398 §8.2.6.1, SIP Status Code to ISDN Cause Code Mapping. "Any SIP status codes not
# listed below ... should be mapping to cause code 31"; for 488 and 606 the RFC recommends 31
# for most Warning codes.
RFC3398_8_2_6_1 = """
   Response received                      Cause value in the REL
   -----------------                      ----------------------
   400 Bad Request                        41 Temporary Failure
   401 Unauthorized                       21 Call rejected (*)
   402 Payment required                   21 Call rejected
   403 Forbidden                          21 Call rejected
   404 Not found                          1 Unallocated number
   405 Method not allowed                 63 Service or option
                                             unavailable
   406 Not acceptable                     79 Service/option not
                                             implemented (+)
   407 Proxy authentication required      21 Call rejected (*)
   408 Request timeout                    102 Recovery on timer expiry
   410 Gone                               22 Number changed
                                             (w/o diagnostic)
   413 Request Entity too long            127 Interworking (+)
   414 Request-URI too long               127 Interworking (+)
   415 Unsupported media type             79 Service/option not
                                             implemented (+)
   416 Unsupported URI Scheme             127 Interworking (+)
   420 Bad extension                      127 Interworking (+)
   421 Extension Required                 127 Interworking (+)
   423 Interval Too Brief                 127 Interworking (+)
   480 Temporarily unavailable            18 No user responding
   481 Call/Transaction Does not Exist    41 Temporary Failure
   482 Loop Detected                      25 Exchange - routing error
   483 Too many hops                      25 Exchange - routing error
   484 Address incomplete                 28 Invalid Number Format (+)
   485 Ambiguous                          1 Unallocated number
   486 Busy here                          17 User busy
   487 Request Terminated                 --- (no mapping)
   488 Not Acceptable here                --- by Warning header
   500 Server internal error              41 Temporary failure
   501 Not implemented                    79 Not implemented, unspecified
   502 Bad gateway                        38 Network out of order
   503 Service unavailable                41 Temporary failure
   504 Server time-out                    102 Recovery on timer expiry
   505 Version Not Supported              127 Interworking (+)
   513 Message Too Large                  127 Interworking (+)
   600 Busy everywhere                    17 User busy
   603 Decline                            21 Call rejected
   604 Does not exist anywhere            1 Unallocated number
   606 Not acceptable                     --- by Warning header
"""

RFC_DEFAULT_CAUSE = 31
LOC_USER = 0
LOC_PUBLIC_REMOTE = 4


def rows(table: str, pattern: str) -> list[tuple[int, str, int | None]]:
    """(left number, rest of the row, right number or None for ---) of each row of `table`."""
    found = []
    for line in table.splitlines():
        if match := re.match(pattern, line):
            right = None if match[3] == "---" else int(match[3])
            found.append((int(match[1]), match[2], right))
    return found


Q850_ROWS = rows(RFC3398_7_2_4_1, r"   (\d{1,3})\s+(.+?)\s{2,}(\d{3}|---)")
SIP_ROWS = rows(RFC3398_8_2_6_1, r"   ([4-6]\d\d) (.+?)\s{2,}(\d{1,3}|---)")


def test_the_copies_parse_whole() -> None:
    assert len(Q850_ROWS) == 33 and len(SIP_ROWS) == 37


@pytest.mark.parametrize(("cause", "name", "status"), Q850_ROWS, ids=lambda v: str(v))
def test_q850_to_sip_row(cause: int, name: str, status: int | None) -> None:
    if status is None:  # cause 16: BYE or CANCEL; an INVITE still waiting gets its class's
        assert cause == 16
        assert q850_to_sip(cause) == q850_to_sip(q850.NORMAL_UNSPECIFIED) == 480
    elif "w/ diagnostic" in name:
        assert q850_to_sip(cause, diagnostic=b"\x81\x35") == status
    else:
        assert q850_to_sip(cause) == status
        assert q850_to_sip(cause, location=LOC_PUBLIC_REMOTE) == status


def test_q850_to_sip_cause_21_from_the_user_is_603() -> None:
    """Note (+): 403 becomes 603 when the cause location is 'user'."""
    assert q850_to_sip(21, location=LOC_USER) == 603
    assert q850_to_sip(21, location=1) == 403


def test_the_q850_table_has_the_rfc_rows_only() -> None:
    assert set(Q850_TO_SIP) == {c for c, _, s in Q850_ROWS if s is not None}


# Values the RFC does not list take the response of their class's unspecified value; the
# classes whose unspecified value has no row (63, 95) take 503 and 500.
@pytest.mark.parametrize(
    ("cause", "status"),
    [(0, 480), (6, 480), (30, 480), (44, 503), (63, 503), (50, 503), (66, 501), (69, 501),
     (81, 500), (95, 500), (100, 500), (103, 500), (120, 500)],
)
def test_q850_to_sip_class_default(cause: int, status: int) -> None:
    assert cause not in Q850_TO_SIP
    assert q850_to_sip(cause) == status


@pytest.mark.parametrize("bad", [-1, 128, 1000, True, 17.0, "17", None])
def test_q850_to_sip_refuses_non_causes(bad: object) -> None:
    with pytest.raises(ValueError):
        q850_to_sip(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "name", "cause"), SIP_ROWS, ids=lambda v: str(v))
def test_sip_to_q850_row(status: int, name: str, cause: int | None) -> None:
    expected = RFC_DEFAULT_CAUSE if cause is None else cause
    assert sip_to_q850(status) == expected
    assert sip_to_q850(str(status)) == expected


def test_the_sip_table_has_the_rfc_rows_only() -> None:
    assert set(SIP_TO_Q850) == {s for s, _, c in SIP_ROWS if c is not None}


@pytest.mark.parametrize("status", [409, 411, 422, 499, 580, 599, 699, "699"])
def test_sip_to_q850_unlisted_status_is_31(status: int | str) -> None:
    assert sip_to_q850(status) == RFC_DEFAULT_CAUSE


BAD_STATUSES = [399, 700, 200, 0, -486, True, 486.0, "4861", " 486", "486 ", "+486", "abc", "",
                "٤٨٦", None]


@pytest.mark.parametrize("bad", BAD_STATUSES)
def test_sip_to_q850_refuses_non_failure_statuses(bad: object) -> None:
    with pytest.raises(ValueError):
        sip_to_q850(bad)  # type: ignore[arg-type]


# -- reject()'s raw_cause ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "sent"),
    [(1, 1), (17, 17), (127, 127), (486, 17), ("486", 17), (400, 41), ("603", 21), (404, 1),
     (699, 31), ("487", 31)],
)
def test_reject_value_takes_q850_or_sip(raw: int | str, sent: int) -> None:
    assert reject_value(None, raw) == sent


@pytest.mark.parametrize("bad", [128, 399, 700, "17", "127", "0486", *BAD_STATUSES[3:-1]])
def test_reject_value_refuses_anything_else(bad: object) -> None:
    with pytest.raises(ValueError, match="raw_cause"):
        reject_value(None, bad)  # type: ignore[arg-type]


# -- RFC 3326 Reason header ----------------------------------------------------------------------


def test_reason_header_is_the_rfc_form() -> None:
    assert reason_header(17) == 'Q.850;cause=17;text="User busy"'
    assert reason_header(16, "Terminated") == 'Q.850;cause=16;text="Terminated"'
    assert reason_header(13) == "Q.850;cause=13"  # unassigned: no name to give
    assert reason_header(600, "Busy Everywhere", protocol="SIP") == (
        'SIP;cause=600;text="Busy Everywhere"'
    )
    assert reason_header(486, protocol="SIP") == "SIP;cause=486"
    assert reason_header(21, 'say "no" \\ twice') == r'Q.850;cause=21;text="say \"no\" \\ twice"'


@pytest.mark.parametrize("cause", range(128))
def test_reason_header_round_trip(cause: int) -> None:
    name = q850.cause_name(cause) if q850.is_assigned(cause) else None
    assert parse_reason(reason_header(cause)) == [Reason("Q.850", cause, name)]


def test_reason_header_round_trip_of_escapes_and_sip() -> None:
    text = 'a "quoted" \\ back\\slash, comma; semicolon=equals'
    assert parse_reason(reason_header(102, text)) == [Reason("Q.850", 102, text)]
    assert parse_reason(reason_header(580, "Precondition Failure", protocol="SIP")) == [
        Reason("SIP", 580, "Precondition Failure")
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 3326 §2's examples, spaces before the semicolons included
        ('SIP ;cause=200 ;text="Call completed elsewhere"',
         [Reason("SIP", 200, "Call completed elsewhere")]),
        ('Q.850 ;cause=16 ;text="Terminated"', [Reason("Q.850", 16, "Terminated")]),
        ('SIP ;cause=600 ;text="Busy Everywhere"', [Reason("SIP", 600, "Busy Everywhere")]),
        ('Q.850;text="User busy";cause=17', [Reason("Q.850", 17, "User busy")]),
        ('  q.850 \t; CAUSE = 17 ; Text = "User busy"  ', [Reason("q.850", 17, "User busy")]),
        ("Q.850;cause=17", [Reason("Q.850", 17, None)]),
        ("Q.850", [Reason("Q.850", None, None)]),
        ("Q.850;cause=017;text=Busy", [Reason("Q.850", 17, "Busy")]),
        ('Q.850;cause=17;text="";foo=bar;flag;x="y,z"', [Reason("Q.850", 17, "")]),
        ('Q.850;cause=17;text="say \\"hi\\" \\\\"', [Reason("Q.850", 17, 'say "hi" \\')]),
        ('SIP;cause=486;text="Busy Here", Q.850;cause=17;text="User busy"',
         [Reason("SIP", 486, "Busy Here"), Reason("Q.850", 17, "User busy")]),
        ("preemption ;cause=1 ;text=\"UA Preemption\"",
         [Reason("preemption", 1, "UA Preemption")]),
    ],
)
def test_parse_reason_tolerates_what_the_grammar_allows(
    value: str, expected: list[Reason]
) -> None:
    assert parse_reason(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "", " ", ",", ";cause=17", "Q.850;cause=17,", ", Q.850;cause=17", "Q.850 cause=17",
        "Q.850;cause=", "Q.850;cause=abc", "Q.850;cause=-1", "Q.850;cause=1.5",
        'Q.850;cause="17"', "Q.850;cause=128", "SIP;cause=99", "SIP;cause=700",
        "Q.850;cause=17;cause=17", "Q.850;cause=1, q.850;cause=2", 'Q.850;text="open',
        'Q.850;text="a"b"', "Q.850;text", "Q.850;text=two words", "Q.850;;cause=17",
        "Reason: Q.850;cause=17", "Q 850;cause=17", "Q.850;cause=١٧",
        "Q.850" + " ;a" * 2000 + " ;",
    ],
)
def test_parse_reason_refuses_garbage(value: str) -> None:
    with pytest.raises(ValueError):
        parse_reason(value)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((128,), {}), ((-1,), {}), ((True,), {}), ((17, "a\r\nb"), {}),
     ((99,), {"protocol": "SIP"}), ((700,), {"protocol": "SIP"}), ((17,), {"protocol": "X"})],
)
def test_reason_header_refuses_bad_values(args: tuple[object, ...], kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        reason_header(*args, **kwargs)  # type: ignore[arg-type]


# -- on the simulated card --------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "sent"), [("486", 17), (603, 21), ("404", 1), ("699", 31)])
def test_reject_with_a_sip_status_sends_its_q850_cause(
    sim: SimulatedCard, tc: Card, raw: int | str, sent: int
) -> None:
    handle = sim.network.place_call("100", "200")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    assert channel.reject(raw_cause=raw) is State.IDLE
    result = handle.wait(5)
    assert (result.cleared_by, result.cause, result.location) == ("card", sent, LOC_USER)
    assert channel.details.raw_cause == sent


@pytest.mark.parametrize("bad", [0, 128, 399, 700, "17", "486 ", True, 486.5])
def test_bad_raw_cause_reaches_nothing(sim: SimulatedCard, tc: Card, bad: object) -> None:
    handle = sim.network.place_call("100")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    with pytest.raises(ValueError, match="raw_cause"):
        channel.reject(raw_cause=bad)  # type: ignore[arg-type]
    assert channel.state() is State.CALL_INCOMING
    # The first clearing the network sees is the one after the refusal.
    assert channel.reject(raw_cause="486") is State.IDLE
    assert handle.wait(5).cause == 17


def test_reject_releases_an_answered_incoming_call(sim: SimulatedCard, tc: Card) -> None:
    handle = sim.network.place_call("100")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    assert channel.answer() is State.ANSWERED
    assert handle.wait(5, until="answered").answered
    assert channel.reject(raw_cause="503") is State.IDLE
    result = handle.wait(5)
    assert (result.cleared_by, result.cause, result.location) == ("card", 41, LOC_USER)
    d = channel.details
    assert (d.raw_cause, d.cause_source, channel.cause()) == (41, "local", Cause.OUTOFORDER)
    assert d.answered is not None


def test_reject_releases_an_answered_outgoing_call(sim: SimulatedCard, tc: Card) -> None:
    sim.network.route("5001", Answer(hold=30))
    channel = free(tc)
    assert channel.call("5001") is State.ANSWERED
    assert channel.reject(Cause.BUSY) is State.IDLE
    result = sim.network.received[-1].wait(5)
    assert (result.answered, result.cleared_by, result.cause) == (True, "card", 17)
    assert channel.cause() is Cause.BUSY


def test_reject_on_an_idle_channel_is_refused(tc: Card) -> None:
    channel = free(tc)
    with pytest.raises(InvalidStateError):
        channel.reject(raw_cause="486")


def test_sip_status_of_a_busy_call_is_486(tc: Card) -> None:
    channel = free(tc)
    assert channel.details.sip_status is None  # no call yet
    assert channel.call("3301") is State.IDLE
    assert (channel.details.raw_cause, channel.details.sip_status) == (17, 486)


def test_sip_status_follows_the_location_note(sim: SimulatedCard, tc: Card) -> None:
    """21 from the network (location 4) is 403; the card's own 21 (location user) is 603."""
    sim.network.route("5002", Reject(21))
    channel = free(tc)
    assert channel.call("5002") is State.IDLE
    assert (channel.details.cause_location, channel.details.sip_status) == (4, 403)
    channel.release()
    sim.network.place_call("100")
    incoming = tc.wait_for_incoming_call(5)
    assert incoming is not None
    assert incoming.reject() is State.IDLE
    assert (incoming.details.cause_location, incoming.details.sip_status) == (LOC_USER, 603)
