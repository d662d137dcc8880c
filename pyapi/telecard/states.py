"""Call channel states (the UAS call channel's) and the map from the card's channel states.

The card's CLEARING state has no State of its own: a channel keeps reporting the state its call
had (ANSWERED, RING_OUTGOING, ...) until the card reports IDLE, because the call is not over
(its cause is not final) until then.
"""

from __future__ import annotations

import enum
from typing import Final

from ._cdriver import lib


class State(enum.Enum):
    """State of a call channel."""

    IDLE = "IDLE"
    WAITING = "WAITING"  # a thread waits in CallChannel.wait_for_incoming_call()
    CALL_INCOMING = "CALL_INCOMING"  # SETUP received, not yet alerted or answered
    RING_INCOMING = "RING_INCOMING"  # ALERTING sent (ring())
    ANSWERING = "ANSWERING"  # CONNECT sent, waiting for CONNECT ACKNOWLEDGE
    ANSWERED = "ANSWERED"  # connected, either direction
    CALL_OUTGOING = "CALL_OUTGOING"  # SETUP sent, no ALERTING yet
    RING_OUTGOING = "RING_OUTGOING"  # ALERTING received
    ERROR = "ERROR"  # the card was lost: the channel cannot be used again

    def __str__(self) -> str:
        return self.value


# Card channel state -> State; CLEARING is absent on purpose (see the module docstring).
CARD_STATES: Final[dict[int, State]] = {
    lib.TC_ST_IDLE: State.IDLE,
    lib.TC_ST_OUT_SETUP: State.CALL_OUTGOING,
    lib.TC_ST_OUT_PROCEEDING: State.CALL_OUTGOING,
    lib.TC_ST_OUT_ALERTING: State.RING_OUTGOING,
    lib.TC_ST_IN_PRESENT: State.CALL_INCOMING,
    lib.TC_ST_IN_ALERTING: State.RING_INCOMING,
    lib.TC_ST_CONNECTING: State.ANSWERING,
    lib.TC_ST_ACTIVE: State.ANSWERED,
}

CARD_CLEARING: Final[int] = lib.TC_ST_CLEARING
