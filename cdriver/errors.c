/*
 * Messages for every code the driver returns.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "telecard.h"

static const char *const tc_messages[] = {
    [TC_EBADMAGIC - TC_ERR_BASE] = "not a telecard card: wrong MAGIC",
    [TC_EVERSION - TC_ERR_BASE] = "the card speaks an incompatible host-link protocol version",
    [TC_EBADRESP - TC_ERR_BASE] = "malformed response from the card",
    [TC_ENOTREADY - TC_ERR_BASE] = "the card has reset and needs a new handshake (NOT_READY)",
    [TC_EBADIDENT - TC_ERR_BASE] = "the card's identity registers hold impossible values",
    [TC_ES_BAD_ADDRESS - TC_ERR_BASE] = "card status BAD_ADDRESS: range outside the register space",
    [TC_ES_READ_ONLY - TC_ERR_BASE] = "card status READ_ONLY: the range is not writable",
    [TC_ES_BAD_LENGTH - TC_ERR_BASE] = "card status BAD_LENGTH: bad transfer length",
    [TC_ES_BAD_VERSION - TC_ERR_BASE] = "card status BAD_VERSION: protocol major version refused",
    [TC_ES_UNKNOWN_TYPE - TC_ERR_BASE] = "card status UNKNOWN_TYPE: request type not supported",
    [TC_ES_BAD_VALUE - TC_ERR_BASE] = "card status BAD_VALUE: the register does not accept the value",
    [TC_ES_UNKNOWN - TC_ERR_BASE] = "the card answered with an undefined status",
    [TC_EBADRING - TC_ERR_BASE] = "the card's event ring HEAD/TAIL are inconsistent",
    [TC_ECAUSE_EMPTY - TC_ERR_BASE] = "malformed cause IE: no octets",
    [TC_ECAUSE_SHORT - TC_ERR_BASE] = "malformed cause IE: the cause value octet is missing",
    [TC_ECAUSE_EXT - TC_ERR_BASE] = "malformed cause IE: wrong extension bit",
    [TC_ECAUSE_LONG - TC_ERR_BASE] = "malformed cause IE: longer than 32 octets",
    [TC_EMB_STATE - TC_ERR_BASE] = "command not valid in the channel's state (mailbox 0x81)",
    [TC_EMB_ARGUMENT - TC_ERR_BASE] = "bad number, cause or length (mailbox 0x82)",
    [TC_EMB_NO_LINK - TC_ERR_BASE] = "the span's D-channel is down (mailbox 0x83)",
    [TC_EMB_UNKNOWN - TC_ERR_BASE] = "unknown command (mailbox 0x84)",
    [TC_EMB_BUSY - TC_ERR_BASE] = "a command is already pending on the channel (mailbox 0x85)",
    [TC_EMB_OTHER - TC_ERR_BASE] = "the mailbox reported an undefined error status",
    [TC_ENOTCHR - TC_ERR_BASE] = "not a character device (a card is a tty or a pty)",
    [TC_ENOCARD - TC_ERR_BASE] =
        "not a card: nothing answered the handshake (or the card's firmware is not running)",
    [TC_ENOTTY - TC_ERR_BASE] =
        "not a card: a character device that is not a terminal (a card's link is a serial "
        "port or a pty)",
    [TC_EMB_UNFINISHED - TC_ERR_BASE] =
        "the card answered the command as idle or still pending, never a result (datasheet 4.3)",
    [TC_ES_OBSERVER - TC_ERR_BASE] =
        "card status OBSERVER: an observer (monitor port) may only read; it cannot change the card",
    [TC_ES_WRONG_PORT - TC_ERR_BASE] = "card status WRONG_PORT: the port does not serve that session",
    [TC_ECONTROLPORT - TC_ERR_BASE] =
        "this is the card's control port, not a monitor port: an observer opens a monitor port "
        "(PATH.monitorN, datasheet 4.6)",
    [TC_EMONITORPORT - TC_ERR_BASE] =
        "this is one of the card's read-only monitor ports: a controller opens the control port "
        "(an observer opens this one with observe)",
};

const char *tc_strerror(int code)
{
    /* -INT_MIN does not exist; no code is that large anyway */
    int e = code == INT_MIN ? INT_MAX : code < 0 ? -code : code;

    if (code == 0)
        return "success";
    switch (e) {
    case EBUSY:
        return "device busy: another process or handle has it open";
    case ENODEV:
        return "device lost: the card's link hung up or failed";
    case ETIMEDOUT:
        return "the card did not answer (timed out after every retry)";
    case EBADF:
        return "the device is closed";
    default:
        break;
    }
    if (e >= TC_ERR_BASE && e <= TC_ERR_LAST) {
        const char *m = tc_messages[e - TC_ERR_BASE];
        return m ? m : "unknown telecard error";
    }
    if (e < TC_ERR_BASE) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
        const char *m = strerrordesc_np(e); /* unlike strerror(), never a shared buffer */
        return m ? m : "unknown error";
#else
        return strerror(e);
#endif
    }
    return "unknown telecard error";
}
