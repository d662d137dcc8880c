/*
 * The card's register map and host-link constants, as docs/datasheet.md defines them.
 *
 * The C copy of firmware_sim/regmap.py, name for name with a TC_ prefix;
 * tests/test_regmap_agreement.py checks that the two agree value for value.
 * All multi-byte registers are little-endian.
 */
#ifndef TELECARD_REGS_H
#define TELECARD_REGS_H

/* Identity and card-wide registers */
#define TC_MAGIC_VALUE 0x44524354u           /* the bytes "TCRD" */
#define TC_REG_MAGIC 0x0000                  /* u32 RO */
#define TC_REG_HW_VERSION 0x0004             /* u16 RO  major<<8 | minor */
#define TC_REG_FW_VERSION 0x0006             /* u16 RO  major<<8 | minor */
#define TC_REG_PROTO_VERSION 0x0008          /* u16 RO  host-link protocol major<<8 | minor */
#define TC_REG_NUM_SPANS 0x000A              /* u8  RO  1..16 */
#define TC_REG_BOOT_ID 0x000C                /* u32 RO  changes at every firmware boot */
#define TC_REG_INT_STATUS 0x0010             /* u32 RO/W1C */
#define TC_REG_INT_MASK 0x0014               /* u32 RW  1 = source enabled */
#define TC_REG_CARD_CONTROL 0x0018           /* u32 WO  CTRL_* bits */
#define TC_REG_EVENT_POST 0x001C             /* u32 RW  POST_*: events also go to the host in EVENTS frames */
#define TC_REG_LINK_RX_FRAMES 0x0020         /* u32 RO  good frames received by the card */
#define TC_REG_LINK_RX_CRC_ERRORS 0x0024     /* u32 RO  frames dropped for a bad CRC */
#define TC_REG_LINK_RX_DISCARDED 0x0028      /* u32 RO  bytes discarded outside frames / bad frames */
#define TC_REG_LINK_RX_DUPLICATES 0x002C     /* u32 RO  retried requests answered from the per-tag memory */
#define TC_REG_HOST_WATCHDOG 0x0030          /* u32 RW  host watchdog grace period in ms, 0 = off */
#define TC_REG_LINK_PORT 0x0034              /* u8  RO  the port read through: 0 control, n monitor port n (since 1.3) */
#define TC_REG_MONITOR_PORTS 0x0035          /* u8  RO  monitor ports the card serves, 0..MAX_MONITOR_PORTS */
#define TC_REG_MONITOR_DROPPED 0x0038        /* u32 RO  events this monitor port could not post since its HELLO */
#define TC_REG_ACCEPT_BEARERS 0x003C         /* u32 RW  bit n: incoming calls with bearer code n are offered */

#define TC_CTRL_SOFT_RESET 0x01
#define TC_POST_ENABLE 0x01
#define TC_POST_AUTO_ACK 0x02                /* with POST_ENABLE: sending an EVENTS frame advances RING_TAIL */
#define TC_POST_MAX_ENTRIES 64               /* entries in one EVENTS frame */
#define TC_POST_SNAPSHOT_LEN 0x70            /* channel block bytes after an INCOMING or CLEARED entry */
#define TC_MAX_MONITOR_PORTS 15
#define TC_ACCEPT_BEARERS_BOOT 0x03          /* speech and 3.1 kHz audio */
#define TC_HOST_WATCHDOG_MAX 600000          /* ms; larger HOST_WATCHDOG values are refused with S_BAD_VALUE */

#define TC_INT_EVENT 0x01                    /* level: event ring not empty (head != tail) */
#define TC_INT_OVERFLOW 0x02                 /* W1C: events were dropped because the ring was full */
#define TC_INT_RESET 0x04                    /* W1C: the firmware has (re)booted */
#define TC_INT_WATCHDOG 0x08                 /* W1C: the host watchdog expired */

/* Per span: SPAN_BASE + span * SPAN_STRIDE */
#define TC_SPAN_BASE 0x0100
#define TC_SPAN_STRIDE 0x20
#define TC_MAX_SPANS 16
#define TC_SPAN_LINE_TYPE 0x00               /* u8 RO  LINE_E1 / LINE_T1 */
#define TC_SPAN_ROLE 0x01                    /* u8 RO  ROLE_TE / ROLE_NT */
#define TC_SPAN_ALARMS 0x02                  /* u8 RO  ALARM_* bits */
#define TC_SPAN_DCHANNEL 0x03                /* u8 RO  DCHAN_DOWN / DCHAN_UP */
#define TC_SPAN_NUM_CHANNELS 0x04            /* u8 RO  bearer channels: 30 (E1) or 23 (T1) */
#define TC_SPAN_DCHANNEL_TIMESLOT 0x05       /* u8 RO  16 (E1) or 24 (T1) */
#define TC_SPAN_OVERLAP_DIGITS 0x06          /* u8 RW  called number length completing overlap receiving, 0 = off */

#define TC_LINE_E1 1
#define TC_LINE_T1 2
#define TC_ROLE_TE 0
#define TC_ROLE_NT 1
#define TC_ALARM_LOS 0x01
#define TC_ALARM_AIS 0x02
#define TC_ALARM_RAI 0x04
#define TC_ALARM_LOF 0x08
#define TC_DCHAN_DOWN 0
#define TC_DCHAN_UP 1

/* Event ring */
#define TC_RING_HEAD 0x0400                  /* u32 RO  free-running count of events written by the card */
#define TC_RING_TAIL 0x0404                  /* u32 RW  free-running count of events consumed by the host */
#define TC_RING_OVERFLOW 0x0408              /* u32 RO/W1C bit 0: events dropped since last cleared */
#define TC_RING_DROPPED 0x040C               /* u32 RO  total events dropped since boot */
#define TC_RING_SIZE 0x0410                  /* u32 RO  entries in the ring (RING_ENTRIES) */
#define TC_RING_ENTRIES_BASE 0x1000
#define TC_RING_ENTRIES 1024
#define TC_EVENT_SIZE 8                      /* u8 span, u8 channel, u8 code, u8 arg, u32 seq */

#define TC_EV_STATE 1                        /* channel state changed; arg = new state */
#define TC_EV_INCOMING 2                     /* a call arrived on the channel; arg = new state */
#define TC_EV_CLEARED 3                      /* the call cleared; cause registers valid; arg = new state (IDLE) */
#define TC_EV_COMMAND_DONE 4                 /* mailbox command finished; arg = mailbox status */
#define TC_EV_SPAN 5                         /* span alarms or D-channel changed; channel = 0, arg = D-channel state */
#define TC_EV_RESET 6                        /* firmware booted; span = channel = 0xFF */
#define TC_EV_WATCHDOG 7                     /* the host watchdog expired; span = channel = 0xFF */

/* Per channel: CHAN_BASE + (span * 32 + timeslot) * CHAN_STRIDE */
#define TC_CHAN_BASE 0x4000
#define TC_CHAN_STRIDE 0x80
#define TC_SLOTS_PER_SPAN 32
#define TC_CHAN_STATE 0x00                   /* u8 */
#define TC_CHAN_DIRECTION 0x01               /* u8 */
#define TC_CHAN_CALL_REF 0x02                /* u16 call reference value (15 bits); bit 15 set when the far end chose it */
#define TC_CHAN_SEQ 0x04                     /* u32 bumped by every change to this channel's registers */
#define TC_CHAN_CAUSE_LEN 0x08               /* u8 octets in CHAN_CAUSE (0: no cause recorded) */
#define TC_CHAN_CAUSE_SOURCE 0x09            /* u8 CAUSE_SRC_* */
#define TC_CHAN_OWNER 0x0A                   /* u8 OWNER_* */
#define TC_CHAN_PRES_BEARER 0x0B              /* u8 calling presentation (PRES_MASK), screening (SCREEN_MASK), bearer */
#define TC_CHAN_CAUSE 0x0C                   /* 32 octets: cause IE contents from octet 3 on */
#define TC_CHAN_CALLED_LEN 0x2C              /* u8 */
#define TC_CHAN_CALLING_LEN 0x2D             /* u8 */
#define TC_CHAN_CALLED_PLAN 0x2E              /* u8 type of number << TON_SHIFT | numbering plan */
#define TC_CHAN_CALLING_PLAN 0x2F             /* u8 type of number << TON_SHIFT | numbering plan */
#define TC_CHAN_CALLED 0x30                  /* 32 IA5 digits */
#define TC_CHAN_CALLING 0x50                 /* 32 IA5 digits */
#define TC_CAUSE_MAX 32
#define TC_NUMBER_MAX 32

#define TC_ST_IDLE 0
#define TC_ST_OUT_SETUP 1                    /* SETUP sent */
#define TC_ST_OUT_PROCEEDING 2               /* SETUP ACK or CALL PROCEEDING received */
#define TC_ST_OUT_ALERTING 3                 /* ALERTING received */
#define TC_ST_IN_PRESENT 4                   /* SETUP received, waiting for the host */
#define TC_ST_IN_ALERTING 5                  /* ALERTING sent */
#define TC_ST_CONNECTING 6                   /* CONNECT sent, waiting for CONNECT ACK */
#define TC_ST_ACTIVE 7
#define TC_ST_CLEARING 8                     /* clearing in progress, channel not yet free */
#define TC_ST_MAINTENANCE 9                  /* out of service until the card's RESTART for it is acknowledged */
#define TC_ST_OUT_OVERLAP 10                 /* overlap sending: SETUP ACK received for a MAKE_CALL_OVERLAP call */
#define TC_ST_IN_OVERLAP 11                  /* overlap receiving: SETUP ACK sent, collecting the called number */

#define TC_DIR_NONE 0
#define TC_DIR_OUTGOING 1
#define TC_DIR_INCOMING 2

#define TC_CAUSE_SRC_NONE 0
#define TC_CAUSE_SRC_REMOTE 1                /* the cause IE came in the far end's clearing message */
#define TC_CAUSE_SRC_LOCAL 2                 /* the card sent it (host command or firmware timer) */

#define TC_OWNER_NONE 0
#define TC_OWNER_HOST 1                      /* reserved by the host: incoming calls are never offered on the channel */

/* Party numbers and bearer (Q.931 4.5.5, 4.5.8, 4.5.10): register fields and their values */
#define TC_TON_SHIFT 4                       /* *_PLAN: type of number in bits 6-4, numbering plan in bits 3-0 */
#define TC_NPI_MASK 0x0F
#define TC_PRES_SHIFT 5                      /* PRES_BEARER / MBOX_CALLING_PRES: presentation in bits 6-5 ... */
#define TC_PRES_MASK 0x60
#define TC_SCREEN_MASK 0x03                  /* ... screening in bits 1-0 ... */
#define TC_BEARER_SHIFT 2                    /* ... and (PRES_BEARER) the bearer code in bits 4-2 */
#define TC_BEARER_MASK 0x1C
#define TC_TON_UNKNOWN 0
#define TC_TON_INTERNATIONAL 1
#define TC_TON_NATIONAL 2
#define TC_TON_NETWORK_SPECIFIC 3
#define TC_TON_SUBSCRIBER 4
#define TC_TON_ABBREVIATED 6
#define TC_NPI_UNKNOWN 0
#define TC_NPI_E164 1                        /* ISDN/telephony numbering plan */
#define TC_NPI_X121 3                        /* data */
#define TC_NPI_F69 4                         /* telex */
#define TC_NPI_NATIONAL 8
#define TC_NPI_PRIVATE 9
#define TC_PRES_ALLOWED 0
#define TC_PRES_RESTRICTED 1
#define TC_PRES_NOT_AVAILABLE 2              /* due to interworking */
#define TC_SCREEN_USER_NOT_SCREENED 0
#define TC_SCREEN_USER_PASSED 1
#define TC_SCREEN_USER_FAILED 2
#define TC_SCREEN_NETWORK 3
#define TC_BEARER_SPEECH 0
#define TC_BEARER_AUDIO_3K1 1
#define TC_BEARER_DIGITAL 2                  /* 64 kbit/s unrestricted digital information */

/* Mailbox per channel: MBOX_BASE + (span * 32 + timeslot) * MBOX_STRIDE */
#define TC_MBOX_BASE 0x14000
#define TC_MBOX_STRIDE 0x80
#define TC_MBOX_CMD 0x00                     /* u8 written last; the card acts when a write covering it ends */
#define TC_MBOX_STATUS 0x01                  /* u8 MB_* */
#define TC_MBOX_CAUSE_LEN 0x04               /* u8 */
#define TC_MBOX_CAUSE 0x08                   /* 32 octets: cause IE contents to send (RELEASE) */
#define TC_MBOX_CALLED_LEN 0x28              /* u8 */
#define TC_MBOX_CALLING_LEN 0x29             /* u8 */
#define TC_MBOX_CALLED_PLAN 0x2A             /* u8 type of number << TON_SHIFT | numbering plan (MAKE_CALL) */
#define TC_MBOX_CALLING_PLAN 0x2B            /* u8 type of number << TON_SHIFT | numbering plan (MAKE_CALL) */
#define TC_MBOX_CALLING_PRES 0x2C            /* u8 presentation << PRES_SHIFT | screening (MAKE_CALL) */
#define TC_MBOX_BEARER 0x2D                  /* u8 BEARER_* (MAKE_CALL) */
#define TC_MBOX_CALLED 0x30                  /* 32 IA5 digits */
#define TC_MBOX_CALLING 0x50                 /* 32 IA5 digits */
#define TC_MBOX_COMMAND_MAX 0x70             /* mailbox bytes a COMMAND request may carry (offsets 0x00-0x6F) */

#define TC_CMD_NONE 0
#define TC_CMD_MAKE_CALL 1
#define TC_CMD_ALERT 2
#define TC_CMD_ANSWER 3
#define TC_CMD_RELEASE 4
#define TC_CMD_RESERVE 5
#define TC_CMD_UNRESERVE 6
#define TC_CMD_MAKE_CALL_OVERLAP 7           /* SETUP without Sending Complete */
#define TC_CMD_SEND_DIGITS 8                 /* INFORMATION with CALLED */
#define TC_CMD_SEND_DIGITS_COMPLETE 9        /* INFORMATION with CALLED and Sending Complete */

#define TC_MB_IDLE 0
#define TC_MB_PENDING 1
#define TC_MB_DONE 2
#define TC_MB_ERR_STATE 0x81                 /* command not valid in the channel's state */
#define TC_MB_ERR_ARGUMENT 0x82              /* bad number, cause or length */
#define TC_MB_ERR_NO_LINK 0x83               /* D-channel down */
#define TC_MB_ERR_UNKNOWN 0x84               /* unknown command code */
#define TC_MB_ERR_BUSY 0x85                  /* a command is already pending on this channel */

#define TC_REG_SPACE_SIZE (TC_MBOX_BASE + TC_MAX_SPANS * TC_SLOTS_PER_SPAN * TC_MBOX_STRIDE)

/* Host link */
#define TC_PROTO_VERSION 0x0104              /* 1.4: the watchdog stays armed (1.3: monitor ports; 1.2: numbered COMMANDs; 1.1: COMMAND, tag memory) */
#define TC_FRAME_FLAG 0x7E
#define TC_FRAME_ESCAPE 0x7D
#define TC_FRAME_ESCAPE_XOR 0x20
#define TC_MAX_DATA 16384                    /* largest READ length or WRITE data in one transaction */
#define TC_MAX_BODY 16400                    /* longest frame body (type, tag, payload) before the CRC */

#define TC_T_HELLO 0x01
#define TC_T_READ 0x02
#define TC_T_WRITE 0x03
#define TC_T_COMMAND 0x04                    /* since 1.1: mailbox bytes in, the command's STATUS and SEQ out */
#define TC_COMMAND_BLOCK_MASK 0x01FF        /* COMMAND's u16 channel field: the block index ... */
#define TC_COMMAND_NUMBER_SHIFT 9           /* ... and above it the host's request number (since 1.2) */
#define TC_COMMAND_NUMBERS 128
#define TC_SESSION_CONTROLLER 0              /* HELLO's optional session byte (since 1.3) */
#define TC_SESSION_OBSERVER 1                /* ... an observer session on a monitor port */
#define TC_T_IRQ 0x10
#define TC_T_EVENTS 0x11
#define TC_T_RESPONSE 0x80                   /* response type = request type | T_RESPONSE */

#define TC_S_OK 0
#define TC_S_BAD_ADDRESS 1
#define TC_S_READ_ONLY 2
#define TC_S_BAD_LENGTH 3
#define TC_S_BAD_VERSION 4
#define TC_S_UNKNOWN_TYPE 5
#define TC_S_NOT_READY 6
#define TC_S_BAD_VALUE 7
#define TC_S_OBSERVER 8                      /* since 1.3: a request that could change the card, on a monitor port */
#define TC_S_WRONG_PORT 9                    /* since 1.3: HELLO for a session the port does not serve */

#define TC_IRQ_REPEAT_MS 50                  /* regmap.IRQ_REPEAT_SECONDS in milliseconds */

#endif
