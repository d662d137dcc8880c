"""Call channel states: the UAS call channel's (the card's own are registers.CardState)."""

from __future__ import annotations

import enum
from typing import Final

from .registers import CardState


class State(enum.Enum):
    """State of a call channel."""

    # Members are singletons compared by identity: the identity hash is right, and in C
    # (Enum's own hashes the name in Python; these key dicts on every call's path).
    __hash__ = object.__hash__

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


# The channel state each card state shows as; CLEARING has none (the channel keeps the state it
# had until the card reaches IDLE).
STATE_OF_CARD: Final[dict[CardState, State]] = {
    CardState.IDLE: State.IDLE,
    CardState.OUT_SETUP: State.CALL_OUTGOING,
    CardState.OUT_PROCEEDING: State.CALL_OUTGOING,
    CardState.OUT_OVERLAP: State.CALL_OUTGOING,
    CardState.OUT_ALERTING: State.RING_OUTGOING,
    CardState.IN_PRESENT: State.CALL_INCOMING,
    CardState.IN_ALERTING: State.RING_INCOMING,
    CardState.CONNECTING: State.ANSWERING,
    CardState.ACTIVE: State.ANSWERED,
}
# The card states in which a channel holds no call: a channel out of service (MAINTENANCE)
# has ended its call, and free_channel() never hands it out (its RESERVE answers MAINTENANCE).
NO_CALL: Final = frozenset({CardState.IDLE, CardState.MAINTENANCE})
# Card states that open no call record and change none: a call CLEARING ends by itself, and
# one IN_OVERLAP (overlap receiving) is the application's once the card offers it, complete.
NO_RECORD: Final = frozenset({CardState.CLEARING, CardState.IN_OVERLAP})
