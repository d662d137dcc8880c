"""Q.921 (LAPD) data-link entity for a point-to-point PRI D-channel: SAPI 0, TEI 0, modulo 128.

One instance per span side. Frames go out through `transport.send(frame)` (no FCS) and come
in through `receive(frame)`; layer 3 sees `on_data(payload)` and `on_link(up)`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

SAPI_CALL_CONTROL = 0
TEI_PRI = 0
N201 = 260  # largest information field

DEFAULT_TIMERS: dict[str, float] = {"T200": 1.0, "T203": 10.0}
DEFAULT_N200 = 3
DEFAULT_K = 7
#: Layer-3 messages waiting for the send window, at most: beyond it send() refuses them, as a
#: lost frame would be (Q.931 timers recover), so a peer that stays busy cannot grow the queue.
MAX_QUEUE = 256
# T200 and T203 are restarted on most frames, so they run lazily: a restart only moves the
# deadline and the pending loop timer re-arms itself when it fires before it. This much early
# counts as on time (float rounding of loop.time()).
_TIMER_SLACK = 1e-6

# U-frame control fields with the P/F bit cleared
SABME = 0x6F
DM = 0x0F
UI = 0x03
DISC = 0x43
UA = 0x63
FRMR = 0x87
XID = 0xAF
PF_U = 0x10
# S-frame control octet 1
RR = 0x01
RNR = 0x05
REJ = 0x09

# Data-link states (Q.921 SDL numbering)
ST_TEI_ASSIGNED = 4
ST_AWAITING_ESTABLISHMENT = 5
ST_AWAITING_RELEASE = 6
ST_MULTIPLE_FRAME = 7
ST_TIMER_RECOVERY = 8


class FrameTransport(Protocol):
    def send(self, frame: bytes) -> None: ...


class Lapd:
    """A LAPD entity; `network` selects the C/R bit convention (network commands carry C/R=1)."""

    __slots__ = (
        "loop", "transport", "network", "on_data", "on_link", "t200", "t203", "n200", "k",
        "state", "vs", "va", "vr", "rc", "peer_busy", "reject_exception", "ack_pending",
        "sent", "queue", "_cmd0", "_rsp0", "_t200_handle", "_t200_deadline", "_t203_handle",
        "_t203_deadline",
        "_flush_scheduled", "_retry_handle", "_stopped", "_l3_up", "stats", "busy_polls",
        "_busy_reset",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: FrameTransport,
        *,
        network: bool,
        on_data: Callable[[bytes], None],
        on_link: Callable[[bool], None],
        timers: dict[str, float] | None = None,
        n200: int = DEFAULT_N200,
        k: int = DEFAULT_K,
    ) -> None:
        t = {**DEFAULT_TIMERS, **(timers or {})}
        self.loop = loop
        self.transport = transport
        self.network = network
        self.on_data = on_data
        self.on_link = on_link
        self.t200 = t["T200"]
        self.t203 = t["T203"]
        self.n200 = n200
        self.k = k
        self.state = ST_TEI_ASSIGNED
        self.vs = self.va = self.vr = 0
        self.rc = 0
        self.peer_busy = False
        self.reject_exception = False
        self.ack_pending = False
        self.sent: dict[int, bytes] = {}  # N(S) -> payload, unacknowledged
        self.queue: deque[bytes] = deque()  # payloads waiting for the window
        cr_cmd = 0x02 if network else 0x00
        self._cmd0 = SAPI_CALL_CONTROL << 2 | cr_cmd
        self._rsp0 = SAPI_CALL_CONTROL << 2 | (cr_cmd ^ 0x02)
        self._t200_handle: asyncio.TimerHandle | None = None
        self._t200_deadline = 0.0  # 0: T200 not running
        self._t203_handle: asyncio.TimerHandle | None = None
        self._t203_deadline = 0.0
        self._flush_scheduled = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self._stopped = False
        # Layer 3 was told the link is up (DL-ESTABLISH) and not yet that it is released: a
        # re-establishment (5.5.3, 5.7) does not tell layer 3 the link went down.
        self._l3_up = False
        # Polls (T200 expiries) the peer has answered busy since it last was not: a busy
        # answer with F=1 ends timer recovery, so `rc` alone would never reach N200.
        self.busy_polls = 0
        # The link was re-established because the peer stayed busy, and the peer has not been
        # ready since: the next time it stays busy past N200 polls the link has failed.
        self._busy_reset = False
        self.stats = {"discarded": 0, "retransmitted": 0, "reestablished": 0, "overflow": 0,
                      "busy_failures": 0}

    # --- public -------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.state >= ST_MULTIPLE_FRAME

    def start(self) -> None:
        """Begin multiple-frame establishment (and keep retrying while the peer is silent)."""
        self._stopped = False
        if self.state == ST_TEI_ASSIGNED:
            self._establish()

    def establish(self) -> None:
        """DL-ESTABLISH-REQUEST from layer 3: establish a released link now, unless a retry
        after a failed establishment is already due (it keeps its pace)."""
        if not self._stopped and self.state == ST_TEI_ASSIGNED and self._retry_handle is None:
            self._establish()

    def stop(self) -> None:
        """Cancel all timers; no further callbacks or frames."""
        self._stopped = True
        for h in (self._t200_handle, self._t203_handle, self._retry_handle):
            if h is not None:
                h.cancel()
        self._t200_handle = self._t203_handle = self._retry_handle = None
        self._t200_deadline = 0.0
        self.state = ST_TEI_ASSIGNED
        self._l3_up = False
        self._busy_reset = False

    def send(self, payload: bytes) -> bool:
        """Queue a layer-3 message for I-frame transmission; False when the link is down or
        MAX_QUEUE messages already wait (the message is dropped)."""
        if self.state < ST_AWAITING_ESTABLISHMENT or self.state == ST_AWAITING_RELEASE:
            return False
        if len(self.queue) >= MAX_QUEUE:
            self.stats["overflow"] += 1
            return False
        self.queue.append(payload)
        if self.state == ST_MULTIPLE_FRAME:
            self._push()
        return True

    def release(self) -> None:
        """Orderly release (DISC)."""
        if self.state in (ST_MULTIPLE_FRAME, ST_TIMER_RECOVERY, ST_AWAITING_ESTABLISHMENT):
            self._discard_queues()
            self.rc = 0
            self._u(DISC, True, command=True)
            self.state = ST_AWAITING_RELEASE
            self._stop_t203()
            self._start_t200()

    # --- frame output -------------------------------------------------------------------

    def _u(self, ctl: int, pf: bool, *, command: bool) -> None:
        self.transport.send(bytes((self._cmd0 if command else self._rsp0, TEI_PRI << 1 | 1,
                                   ctl | (PF_U if pf else 0))))

    def _s(self, ctl: int, pf: bool, *, command: bool) -> None:
        self.ack_pending = False
        self.transport.send(bytes((self._cmd0 if command else self._rsp0, TEI_PRI << 1 | 1, ctl,
                                   self.vr << 1 | (1 if pf else 0))))

    def _push(self) -> None:
        """Send queued I-frames while the window allows."""
        if self.peer_busy:
            return
        q = self.queue
        sent = self.sent
        k = self.k
        send = self.transport.send
        a0 = self._cmd0
        started = False
        while q and (self.vs - self.va) & 0x7F < k:
            payload = q.popleft()
            ns = self.vs
            sent[ns] = payload
            send(bytes((a0, 0x01, ns << 1, self.vr << 1)) + payload)
            self.vs = (ns + 1) & 0x7F
            started = True
        if started:
            self.ack_pending = False
            if not self._t200_deadline:
                self._start_t200()

    def _schedule_ack(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_ack)

    def _flush_ack(self) -> None:
        # Deferred to the end of the loop turn so a reply I-frame can carry the acknowledgement.
        self._flush_scheduled = False
        if self.ack_pending and self.state >= ST_MULTIPLE_FRAME and not self._stopped:
            self._s(RR, False, command=False)

    # --- timers -------------------------------------------------------------------------

    def _start_t200(self) -> None:
        # The pending handle cannot be due after this deadline: T200 only ever moves later.
        self._t200_deadline = self.loop.time() + self.t200
        if self._t200_handle is None:
            self._t200_handle = self.loop.call_at(self._t200_deadline, self._t200_check)

    def _stop_t200(self) -> None:
        self._t200_deadline = 0.0

    def _t200_check(self) -> None:
        self._t200_handle = None
        deadline = self._t200_deadline
        if self._stopped or not deadline:
            return
        if self.loop.time() < deadline - _TIMER_SLACK:
            self._t200_handle = self.loop.call_at(deadline, self._t200_check)
            return
        self._t200_deadline = 0.0
        self._t200_expired()

    def _restart_t203(self) -> None:
        self._t203_deadline = self.loop.time() + self.t203
        if self._t203_handle is None:
            self._t203_handle = self.loop.call_at(self._t203_deadline, self._t203_check)

    def _stop_t203(self) -> None:
        if self._t203_handle is not None:
            self._t203_handle.cancel()
            self._t203_handle = None

    def _t203_check(self) -> None:
        self._t203_handle = None
        if self._stopped or self.state != ST_MULTIPLE_FRAME:
            return
        if self.loop.time() < self._t203_deadline - _TIMER_SLACK:
            self._t203_handle = self.loop.call_at(self._t203_deadline, self._t203_check)
            return
        self.rc = 0
        self._enquiry()
        self.state = ST_TIMER_RECOVERY

    def _enquiry(self) -> None:
        self._s(RR, True, command=True)
        self._start_t200()

    def _t200_expired(self) -> None:
        st = self.state
        if st == ST_AWAITING_ESTABLISHMENT:
            if self.rc >= self.n200:
                self._to_released(retry=True)
                return
            self.rc += 1
            self._u(SABME, True, command=True)
            self._start_t200()
        elif st == ST_AWAITING_RELEASE:
            if self.rc >= self.n200:
                self._to_released(retry=False)
                return
            self.rc += 1
            self._u(DISC, True, command=True)
            self._start_t200()
        elif st == ST_MULTIPLE_FRAME:
            if self.peer_busy:
                if self.busy_polls >= self.n200:
                    self._peer_busy_too_long()
                    return
                self.busy_polls += 1
            self.rc = 0
            self._stop_t203()
            self._enquiry()
            self.rc = 1
            self.state = ST_TIMER_RECOVERY
        elif st == ST_TIMER_RECOVERY:
            if self.rc >= self.n200:
                if self.peer_busy:
                    self._peer_busy_too_long()
                else:
                    self._reestablish()
                return
            self.rc += 1
            self._enquiry()

    # --- state changes ------------------------------------------------------------------

    def _discard_queues(self) -> None:
        self.queue.clear()
        self.sent.clear()

    def _reset_vars(self) -> None:
        self.vs = self.va = self.vr = 0
        self.busy_polls = 0
        self.peer_busy = self.reject_exception = self.ack_pending = False

    def _establish(self) -> None:
        self.rc = 0
        self.state = ST_AWAITING_ESTABLISHMENT
        self._stop_t203()
        self._u(SABME, True, command=True)
        self._start_t200()

    def _reestablish(self) -> None:
        # Unacknowledged I-frames are lost with the old sequence numbers (Q.921 5.5.3.1).
        # Layer 3 hears DL-ESTABLISH-INDICATION once the peer answers, and DL-RELEASE-
        # INDICATION only if it never does (Q.921 SDL, awaiting establishment): a data link
        # reset, which Q.931 5.8.8 survives, not a failure (5.8.9).
        self.stats["reestablished"] += 1
        self._discard_queues()
        self._establish()

    def _peer_busy_too_long(self) -> None:
        # This card's policy, not Q.921's letter: Q.921 bounds the polls of a peer that does not
        # answer (N200, 5.6.5) but lets one that answers busy stay busy; a card must not queue
        # for ever behind it. So N200 polls answered busy end in re-establishment (5.7), which
        # layer 3 sees as a data link reset (Q.931 5.8.8), and a peer still busy after that
        # reset has failed: the link is released (DISC) and layer 3 told, so that Q.931 5.8.9
        # applies (active calls wait for the link under T309, others are cleared);
        # establishment is retried.
        self.busy_polls = 0
        if not self._busy_reset:
            self._busy_reset = True
            self._reestablish()
            return
        self._busy_reset = False
        self.stats["busy_failures"] += 1
        self._u(DISC, True, command=True)
        self._to_released(retry=True)

    def _to_released(self, *, retry: bool) -> None:
        was_up = self._l3_up
        self._l3_up = False
        self._stop_t200()
        self._stop_t203()
        self._discard_queues()
        self.state = ST_TEI_ASSIGNED
        if retry and not self._stopped and self._retry_handle is None:
            self._retry_handle = self.loop.call_later(self.t200 * self.n200, self._retry)
        if was_up:
            self.on_link(False)

    def _retry(self) -> None:
        self._retry_handle = None
        if not self._stopped and self.state == ST_TEI_ASSIGNED:
            self._establish()

    def _established(self) -> None:
        self._stop_t200()
        self._reset_vars()
        self.rc = 0
        self.state = ST_MULTIPLE_FRAME
        self._restart_t203()
        self._l3_up = True
        self.on_link(True)
        self._push()

    # --- frame input --------------------------------------------------------------------

    def receive(self, frame: bytes) -> None:
        """Handle one frame from the peer (FCS already removed)."""
        if self._stopped:
            return
        n = len(frame)
        if n < 3 or frame[0] & 0x01 or not frame[1] & 0x01:
            self.stats["discarded"] += 1
            return
        if frame[0] >> 2 != SAPI_CALL_CONTROL or frame[1] >> 1 != TEI_PRI:
            self.stats["discarded"] += 1  # TEI management and other SAPIs do not apply
            return
        command = bool(frame[0] & 0x02) != self.network
        c0 = frame[2]
        if not c0 & 0x01:
            if n < 4:
                return self._bad_frame()
            self._rx_i(frame, command)
        elif c0 & 0x03 == 0x01:
            if n != 4:
                return self._bad_frame()
            self._rx_s(c0, frame[3], command)
        else:
            if n != 3 and c0 & ~PF_U & 0xFF not in (UI, FRMR, XID):
                return self._bad_frame()
            self._rx_u(c0 & ~PF_U & 0xFF, bool(c0 & PF_U), command)

    def _bad_frame(self) -> None:
        # Q.921 5.8.5: LAPD does not send FRMR; a frame error in multiple-frame operation
        # re-establishes the link, otherwise the frame is dropped.
        self.stats["discarded"] += 1
        if self.state >= ST_MULTIPLE_FRAME:
            self._reestablish()

    def _rx_u(self, ctl: int, pf: bool, command: bool) -> None:
        st = self.state
        if ctl == SABME and command:
            if st == ST_AWAITING_RELEASE:
                self._u(DM, pf, command=False)
                return
            self._u(UA, pf, command=False)
            if st == ST_AWAITING_ESTABLISHMENT:
                return  # collision: become established on the peer's UA
            if st >= ST_MULTIPLE_FRAME:
                self._discard_queues()
                self._reset_vars()
                self._stop_t200()
                self.state = ST_MULTIPLE_FRAME
                self._restart_t203()
                self.on_link(True)
                return
            if self._retry_handle is not None:
                self._retry_handle.cancel()
                self._retry_handle = None
            self._established()
        elif ctl == DISC and command:
            if st in (ST_TEI_ASSIGNED, ST_AWAITING_ESTABLISHMENT):
                self._u(DM, pf, command=False)
                return
            self._u(UA, pf, command=False)
            if st == ST_AWAITING_RELEASE:
                return  # SDL state 6: our own DISC still awaits its UA (or DM, or N200)
            self._to_released(retry=False)
        elif ctl == UA and not command:
            if st == ST_AWAITING_ESTABLISHMENT and pf:
                self._established()
            elif st == ST_AWAITING_RELEASE and pf:
                self._to_released(retry=False)
            else:
                self.stats["discarded"] += 1  # unsolicited UA: MDL error C/D, no action
        elif ctl == DM and not command:
            if st == ST_AWAITING_ESTABLISHMENT and pf:
                self._to_released(retry=True)
            elif st == ST_AWAITING_RELEASE and pf:
                self._to_released(retry=False)
            elif st >= ST_MULTIPLE_FRAME and not pf:
                self._reestablish()  # peer lost the link (MDL error E)
        elif ctl == FRMR and not command:
            if st >= ST_MULTIPLE_FRAME:
                self._reestablish()
        elif ctl in (UI, XID):
            return
        else:
            self._bad_frame()

    def _valid_nr(self, nr: int) -> bool:
        return (nr - self.va) & 0x7F <= (self.vs - self.va) & 0x7F

    def _ack_to(self, nr: int) -> None:
        sent = self.sent
        va = self.va
        while va != nr:
            sent.pop(va, None)
            va = (va + 1) & 0x7F
        self.va = va

    def _rx_i(self, frame: bytes, command: bool) -> None:
        st = self.state
        if not command:
            # I-frames are commands only: one with the response C/R is an MDL error and is
            # discarded (Q.921 SDL); it is no frame error, so no re-establishment.
            self.stats["discarded"] += 1
            return
        if st < ST_MULTIPLE_FRAME:
            if st == ST_TEI_ASSIGNED and frame[3] & 0x01:
                self._u(DM, True, command=False)  # SDL state 4: command with P=1 -> DM F=1
            return
        if len(frame) - 4 > N201:
            self._bad_frame()
            return
        ns = frame[2] >> 1
        nr = frame[3] >> 1
        p = frame[3] & 0x01
        if ns == self.vr:
            self.vr = (ns + 1) & 0x7F
            self.reject_exception = False
            # Pending before layer 3 runs, so that an I-frame it sends in reply (which carries
            # N(R) and clears the flag) makes the RR unnecessary.
            self.ack_pending = True
            self.on_data(frame[4:])
            if self._stopped:
                return
            if p:
                self._s(RR, True, command=False)
            elif self.ack_pending:
                self._schedule_ack()
        else:
            self.stats["discarded"] += 1
            if not self.reject_exception:
                self.reject_exception = True
                self._s(REJ, bool(p), command=False)
            elif p:
                self._s(RR, True, command=False)
        if self.state < ST_MULTIPLE_FRAME:
            return
        self._process_nr(nr, from_response_f=False)

    def _process_nr(self, nr: int, *, from_response_f: bool) -> None:
        if not self._valid_nr(nr):
            self._reestablish()  # MDL error J
            return
        if self.state == ST_TIMER_RECOVERY:
            self._ack_to(nr)
            if from_response_f:
                self._stop_t200()
                self._restart_t203()
                self.state = ST_MULTIPLE_FRAME
                self._retransmit_from(nr)
            return
        if nr != self.va:
            self._ack_to(nr)
            if nr == self.vs:
                self._stop_t200()
            else:
                self._start_t200()
        self._restart_t203()
        if self.queue:
            self._push()

    def _retransmit_from(self, nr: int) -> None:
        """Go back to N(R): resend every unacknowledged frame, then the queue."""
        pending = []
        v = nr
        while v != self.vs:
            payload = self.sent.pop(v, None)
            if payload is not None:
                pending.append(payload)
            v = (v + 1) & 0x7F
        self.vs = nr
        self.stats["retransmitted"] += len(pending)
        self.queue.extendleft(reversed(pending))
        self._push()

    def _rx_s(self, ctl: int, o2: int, command: bool) -> None:
        st = self.state
        if st < ST_MULTIPLE_FRAME:
            if st == ST_TEI_ASSIGNED and command and o2 & 0x01:
                self._u(DM, True, command=False)  # SDL state 4: command with P=1 -> DM F=1
            return
        nr = o2 >> 1
        pf = bool(o2 & 0x01)
        if ctl in (RR, REJ):
            self.peer_busy = False
            self.busy_polls = 0
            self._busy_reset = False
        elif ctl == RNR:
            self.peer_busy = True
        else:
            self._bad_frame()
            return
        if command and pf:
            self._s(RR, True, command=False)  # answer the enquiry
        if not self._valid_nr(nr):
            self._reestablish()
            return
        if st == ST_TIMER_RECOVERY:
            self._process_nr(nr, from_response_f=not command and pf)
            if ctl == RNR and self.state == ST_MULTIPLE_FRAME:
                self._start_t200()
            return
        if ctl == REJ:
            self._ack_to(nr)
            self._stop_t200()
            self._restart_t203()
            self._retransmit_from(nr)
            return
        if ctl == RNR:
            self._ack_to(nr)
            # Poll the busy peer when T200 runs out, counted from its first RNR: a stream of
            # RNRs must not put the poll (and the N200 limit) off for ever.
            if not self._t200_deadline:
                self._start_t200()
            return
        self._process_nr(nr, from_response_f=False)
