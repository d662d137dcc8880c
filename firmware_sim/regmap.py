"""The card's register map and host-link constants, as docs/datasheet.md defines them.

This is the Python copy of the map; cdriver/telecard_regs.h is the C copy, and
tests/test_regmap_agreement.py checks that the two agree value for value.
All multi-byte registers are little-endian.
"""

# Identity and card-wide registers
MAGIC_VALUE = 0x44524354  # the bytes "TCRD"
REG_MAGIC = 0x0000  # u32 RO
REG_HW_VERSION = 0x0004  # u16 RO  major<<8 | minor
REG_FW_VERSION = 0x0006  # u16 RO  major<<8 | minor
REG_PROTO_VERSION = 0x0008  # u16 RO  host-link protocol major<<8 | minor
REG_NUM_SPANS = 0x000A  # u8  RO  1..16
REG_BOOT_ID = 0x000C  # u32 RO  changes at every firmware boot
REG_INT_STATUS = 0x0010  # u32 RO/W1C
REG_INT_MASK = 0x0014  # u32 RW  1 = source enabled
REG_CARD_CONTROL = 0x0018  # u32 WO  CTRL_* bits
REG_EVENT_POST = 0x001C  # u32 RW  POST_*: events also go to the host in EVENTS frames
REG_LINK_RX_FRAMES = 0x0020  # u32 RO  good frames received by the card
REG_LINK_RX_CRC_ERRORS = 0x0024  # u32 RO  frames dropped for a bad CRC
REG_LINK_RX_DISCARDED = 0x0028  # u32 RO  bytes discarded outside frames / bad frames
REG_LINK_RX_DUPLICATES = 0x002C  # u32 RO  retried requests answered from the per-tag memory
REG_HOST_WATCHDOG = 0x0030  # u32 RW  host watchdog grace period in ms, 0 = off
REG_LINK_PORT = 0x0034  # u8  RO  the port read through: 0 control, n monitor port n (since 1.3)
REG_MONITOR_PORTS = 0x0035  # u8  RO  monitor ports the card serves, 0..MAX_MONITOR_PORTS
REG_MONITOR_DROPPED = 0x0038  # u32 RO  events this monitor port could not post since its HELLO
REG_ACCEPT_BEARERS = 0x003C  # u32 RW  bit n: incoming calls with bearer code n are offered

CTRL_SOFT_RESET = 0x01
POST_ENABLE = 0x01
POST_AUTO_ACK = 0x02  # with POST_ENABLE: sending an EVENTS frame advances RING_TAIL
POST_MAX_ENTRIES = 64  # entries in one EVENTS frame
POST_SNAPSHOT_LEN = 0x70  # channel block bytes after an INCOMING or CLEARED entry
MAX_MONITOR_PORTS = 15
ACCEPT_BEARERS_BOOT = 0x03  # speech and 3.1 kHz audio
HOST_WATCHDOG_MAX = 600000  # ms; larger HOST_WATCHDOG values are refused with S_BAD_VALUE

INT_EVENT = 0x01  # level: event ring not empty (head != tail)
INT_OVERFLOW = 0x02  # W1C: events were dropped because the ring was full
INT_RESET = 0x04  # W1C: the firmware has (re)booted
INT_WATCHDOG = 0x08  # W1C: the host watchdog expired

# Per span: SPAN_BASE + span * SPAN_STRIDE
SPAN_BASE = 0x0100
SPAN_STRIDE = 0x20
MAX_SPANS = 16
SPAN_LINE_TYPE = 0x00  # u8 RO  LINE_E1 / LINE_T1
SPAN_ROLE = 0x01  # u8 RO  ROLE_TE / ROLE_NT
SPAN_ALARMS = 0x02  # u8 RO  ALARM_* bits
SPAN_DCHANNEL = 0x03  # u8 RO  DCHAN_DOWN / DCHAN_UP
SPAN_NUM_CHANNELS = 0x04  # u8 RO  bearer channels: 30 (E1) or 23 (T1)
SPAN_DCHANNEL_TIMESLOT = 0x05  # u8 RO  16 (E1) or 24 (T1)
SPAN_OVERLAP_DIGITS = 0x06  # u8 RW  called number length completing overlap receiving, 0 = off

LINE_E1 = 1
LINE_T1 = 2
ROLE_TE = 0
ROLE_NT = 1
ALARM_LOS = 0x01
ALARM_AIS = 0x02
ALARM_RAI = 0x04
ALARM_LOF = 0x08
DCHAN_DOWN = 0
DCHAN_UP = 1

# Event ring
RING_HEAD = 0x0400  # u32 RO  free-running count of events written by the card
RING_TAIL = 0x0404  # u32 RW  free-running count of events consumed by the host
RING_OVERFLOW = 0x0408  # u32 RO/W1C bit 0: events dropped since last cleared
RING_DROPPED = 0x040C  # u32 RO  total events dropped since boot
RING_SIZE = 0x0410  # u32 RO  entries in the ring (RING_ENTRIES)
RING_ENTRIES_BASE = 0x1000
RING_ENTRIES = 1024
EVENT_SIZE = 8  # u8 span, u8 channel, u8 code, u8 arg, u32 seq

EV_STATE = 1  # channel state changed; arg = new state
EV_INCOMING = 2  # a call arrived on the channel; arg = new state
EV_CLEARED = 3  # the call cleared; cause registers valid; arg = new state (IDLE)
EV_COMMAND_DONE = 4  # mailbox command finished; arg = mailbox status
EV_SPAN = 5  # span alarms or D-channel changed; channel = 0, arg = D-channel state
EV_RESET = 6  # firmware booted; span = channel = 0xFF
EV_WATCHDOG = 7  # the host watchdog expired; span = channel = 0xFF

# Per channel: CHAN_BASE + (span * 32 + timeslot) * CHAN_STRIDE
CHAN_BASE = 0x4000
CHAN_STRIDE = 0x80
SLOTS_PER_SPAN = 32
CHAN_STATE = 0x00  # u8
CHAN_DIRECTION = 0x01  # u8
CHAN_CALL_REF = 0x02  # u16 call reference value (15 bits); bit 15 set when the far end chose it
CHAN_SEQ = 0x04  # u32 bumped by every change to this channel's registers
CHAN_CAUSE_LEN = 0x08  # u8 octets in CHAN_CAUSE (0: no cause recorded)
CHAN_CAUSE_SOURCE = 0x09  # u8 CAUSE_SRC_*
CHAN_OWNER = 0x0A  # u8 OWNER_*
CHAN_PRES_BEARER = 0x0B  # u8 calling presentation (PRES_MASK), screening (SCREEN_MASK), bearer
CHAN_CAUSE = 0x0C  # 32 octets: cause IE contents from octet 3 on
CHAN_CALLED_LEN = 0x2C  # u8
CHAN_CALLING_LEN = 0x2D  # u8
CHAN_CALLED_PLAN = 0x2E  # u8 type of number << TON_SHIFT | numbering plan
CHAN_CALLING_PLAN = 0x2F  # u8 type of number << TON_SHIFT | numbering plan
CHAN_CALLED = 0x30  # 32 IA5 digits
CHAN_CALLING = 0x50  # 32 IA5 digits
CAUSE_MAX = 32
NUMBER_MAX = 32

ST_IDLE = 0
ST_OUT_SETUP = 1  # SETUP sent
ST_OUT_PROCEEDING = 2  # SETUP ACK or CALL PROCEEDING received
ST_OUT_ALERTING = 3  # ALERTING received
ST_IN_PRESENT = 4  # SETUP received, waiting for the host
ST_IN_ALERTING = 5  # ALERTING sent
ST_CONNECTING = 6  # CONNECT sent, waiting for CONNECT ACK
ST_ACTIVE = 7
ST_CLEARING = 8  # clearing in progress, channel not yet free
ST_MAINTENANCE = 9  # out of service until the card's RESTART for it is acknowledged
ST_OUT_OVERLAP = 10  # overlap sending: SETUP ACK received for a MAKE_CALL_OVERLAP call
ST_IN_OVERLAP = 11  # overlap receiving: SETUP ACK sent, collecting the called number

DIR_NONE = 0
DIR_OUTGOING = 1
DIR_INCOMING = 2

CAUSE_SRC_NONE = 0
CAUSE_SRC_REMOTE = 1  # the cause IE came in the far end's clearing message
CAUSE_SRC_LOCAL = 2  # the card sent it (host command or firmware timer)

OWNER_NONE = 0
OWNER_HOST = 1  # reserved by the host: incoming calls are never offered on the channel

# Party numbers and bearer (Q.931 4.5.5, 4.5.8, 4.5.10): register fields and their values
TON_SHIFT = 4  # *_PLAN: type of number in bits 6-4, numbering plan in bits 3-0
NPI_MASK = 0x0F
PRES_SHIFT = 5  # PRES_BEARER / MBOX_CALLING_PRES: presentation in bits 6-5 ...
PRES_MASK = 0x60
SCREEN_MASK = 0x03  # ... screening in bits 1-0 ...
BEARER_SHIFT = 2  # ... and (PRES_BEARER) the bearer code in bits 4-2
BEARER_MASK = 0x1C
TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_NETWORK_SPECIFIC = 3
TON_SUBSCRIBER = 4
TON_ABBREVIATED = 6
NPI_UNKNOWN = 0
NPI_E164 = 1  # ISDN/telephony numbering plan
NPI_X121 = 3  # data
NPI_F69 = 4  # telex
NPI_NATIONAL = 8
NPI_PRIVATE = 9
PRES_ALLOWED = 0
PRES_RESTRICTED = 1
PRES_NOT_AVAILABLE = 2  # due to interworking
SCREEN_USER_NOT_SCREENED = 0
SCREEN_USER_PASSED = 1
SCREEN_USER_FAILED = 2
SCREEN_NETWORK = 3
BEARER_SPEECH = 0
BEARER_AUDIO_3K1 = 1
BEARER_DIGITAL = 2  # 64 kbit/s unrestricted digital information

# Mailbox per channel: MBOX_BASE + (span * 32 + timeslot) * MBOX_STRIDE
MBOX_BASE = 0x14000
MBOX_STRIDE = 0x80
MBOX_CMD = 0x00  # u8 written last; the card acts when a write covering it ends
MBOX_STATUS = 0x01  # u8 MB_*
MBOX_CAUSE_LEN = 0x04  # u8
MBOX_CAUSE = 0x08  # 32 octets: cause IE contents to send (RELEASE)
MBOX_CALLED_LEN = 0x28  # u8
MBOX_CALLING_LEN = 0x29  # u8
MBOX_CALLED_PLAN = 0x2A  # u8 type of number << TON_SHIFT | numbering plan (MAKE_CALL)
MBOX_CALLING_PLAN = 0x2B  # u8 type of number << TON_SHIFT | numbering plan (MAKE_CALL)
MBOX_CALLING_PRES = 0x2C  # u8 presentation << PRES_SHIFT | screening (MAKE_CALL)
MBOX_BEARER = 0x2D  # u8 BEARER_* (MAKE_CALL)
MBOX_CALLED = 0x30  # 32 IA5 digits
MBOX_CALLING = 0x50  # 32 IA5 digits
MBOX_COMMAND_MAX = 0x70  # mailbox bytes a COMMAND request may carry (offsets 0x00-0x6F)

CMD_NONE = 0
CMD_MAKE_CALL = 1
CMD_ALERT = 2
CMD_ANSWER = 3
CMD_RELEASE = 4
CMD_RESERVE = 5
CMD_UNRESERVE = 6
CMD_MAKE_CALL_OVERLAP = 7  # SETUP without Sending Complete
CMD_SEND_DIGITS = 8  # INFORMATION with CALLED
CMD_SEND_DIGITS_COMPLETE = 9  # INFORMATION with CALLED and Sending Complete

MB_IDLE = 0
MB_PENDING = 1
MB_DONE = 2
MB_ERR_STATE = 0x81  # command not valid in the channel's state
MB_ERR_ARGUMENT = 0x82  # bad number, cause or length
MB_ERR_NO_LINK = 0x83  # D-channel down
MB_ERR_UNKNOWN = 0x84  # unknown command code
MB_ERR_BUSY = 0x85  # a command is already pending on this channel

REG_SPACE_SIZE = MBOX_BASE + MAX_SPANS * SLOTS_PER_SPAN * MBOX_STRIDE

# Host link
# 1.4: the watchdog stays armed; 1.3: monitor ports; 1.2: numbered COMMANDs; 1.1: COMMAND
PROTO_VERSION = 0x0104
FRAME_FLAG = 0x7E
FRAME_ESCAPE = 0x7D
FRAME_ESCAPE_XOR = 0x20
MAX_DATA = 16384  # largest READ length or WRITE data in one transaction
MAX_BODY = 16400  # longest frame body (type, tag, payload) before the CRC

T_HELLO = 0x01
T_READ = 0x02
T_WRITE = 0x03
T_COMMAND = 0x04  # since 1.1: mailbox bytes in, the command's STATUS and SEQ out
COMMAND_BLOCK_MASK = 0x01FF  # COMMAND's u16 channel field: the block index ...
COMMAND_NUMBER_SHIFT = 9  # ... and above it the host's request number (since 1.2)
COMMAND_NUMBERS = 128
SESSION_CONTROLLER = 0  # HELLO's optional session byte (since 1.3)
SESSION_OBSERVER = 1  # ... an observer session on a monitor port
T_IRQ = 0x10
T_EVENTS = 0x11
T_RESPONSE = 0x80  # response type = request type | T_RESPONSE

S_OK = 0
S_BAD_ADDRESS = 1
S_READ_ONLY = 2
S_BAD_LENGTH = 3
S_BAD_VERSION = 4
S_UNKNOWN_TYPE = 5
S_NOT_READY = 6
S_BAD_VALUE = 7
S_OBSERVER = 8  # since 1.3: a request that could change the card, on a monitor port
S_WRONG_PORT = 9  # since 1.3: HELLO for a session the port does not serve

IRQ_REPEAT_SECONDS = 0.05


def span_reg(span: int, offset: int) -> int:
    return SPAN_BASE + span * SPAN_STRIDE + offset


def chan_reg(span: int, timeslot: int, offset: int) -> int:
    return CHAN_BASE + (span * SLOTS_PER_SPAN + timeslot) * CHAN_STRIDE + offset


def mbox_reg(span: int, timeslot: int, offset: int) -> int:
    return MBOX_BASE + (span * SLOTS_PER_SPAN + timeslot) * MBOX_STRIDE + offset


def bearer_timeslots(line: int) -> tuple[int, ...]:
    """Timeslots that carry B-channels: E1 1-15 and 17-31, T1 1-23."""
    if line == LINE_E1:
        return tuple(ts for ts in range(1, 32) if ts != 16)
    return tuple(range(1, 24))
