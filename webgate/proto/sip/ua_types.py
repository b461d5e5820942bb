"""The user agent's value types: configuration, credentials, call-end causes, session states,
and small parsers of what arrives in a request or response (INFO DTMF, digest challenges).
Part of :mod:`useragent`, which re-exports every public name."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.sip import auth
from webgate.proto.sip.extensions import MIN_SE_FLOOR, option_tags
from webgate.proto.sip.message import SipMessage, SipResponse, SipURI
from webgate.proto.sip.transaction import TimerConfig

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK"
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


class EndCause(enum.Enum):
    LOCAL_HANGUP = "local_hangup"  # we sent BYE
    REMOTE_HANGUP = "remote_hangup"  # far end sent BYE
    CANCELLED = "cancelled"  # we cancelled before answer
    REMOTE_CANCELLED = "remote_cancelled"  # the caller cancelled our incoming call
    REJECTED = "rejected"  # final 3xx-6xx to our INVITE (status set)
    DECLINED = "declined"  # we rejected an incoming call (status set)
    TIMEOUT = "timeout"  # Timer B / no response (408)
    AUTH_FAILED = "auth_failed"  # challenged again after our credentials, or none configured
    NO_ACK = "no_ack"  # our 2xx was never acknowledged
    TRANSPORT_ERROR = "transport_error"
    PROTOCOL_ERROR = "protocol_error"
    SESSION_TIMER = "session_timer"  # the session expired, or our refresh of it failed (RFC 4028)


@dataclass(frozen=True)
class CallEnd:
    cause: EndCause
    status: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    realm: str = ""  # empty: answer any realm


@dataclass(frozen=True)
class LocalEndpoint:
    """Where peers reach us on one transport: the advertised (not necessarily bound) address."""

    transport: str
    host: str
    port: int


@dataclass
class UAConfig:
    endpoints: dict[str, LocalEndpoint]  # by transport
    user_agent: str = "webgate"
    contact_user: str = "webgate"
    outbound_proxy: SipURI | None = None
    timers: TimerConfig = field(default_factory=TimerConfig)
    accept_incoming: bool = True
    #: send responses to a request's Via ``maddr`` (RFC 3261 §18.2.2); off: to the request's source
    honour_maddr: bool = False
    #: UAC: ``Supported: 100rel`` in our INVITEs (reliable provisionals are PRACKed either way);
    #: the UAS side sends reliable provisionals when an INVITE requires them (RFC 3262)
    support_100rel: bool = True
    #: the smallest session interval we accept (RFC 4028 Min-SE: 90 s, the RFC's floor; only
    #: tests set less, to see timers fire in seconds)
    min_se: int = MIN_SE_FLOOR
    #: RFC 3263 §4.3 failover without waiting for Timer B/F: a located server that has not
    #: answered an INVITE or REGISTER at all (not even 100) within this many seconds is given up
    #: (its transaction abandoned) and the next one tried; 0 = wait for Timer B/F
    failover_timeout: float = 0.0


class SessionState(enum.Enum):
    CALLING = "calling"  # UAC: INVITE sent
    EARLY = "early"  # UAC: provisional received / UAS: provisional sent
    INCOMING = "incoming"  # UAS: INVITE received, nothing sent yet
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_DTMF_RE = re.compile(r"^[0-9A-Da-d*#]$")


def parse_dtmf_info(content_type: str, body: bytes) -> tuple[str, int] | None:
    """application/dtmf-relay (Signal=5 / Duration=160) or application/dtmf ("5")."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if content_type == "application/dtmf-relay":
        signal = None
        duration = 160
        for line in text.splitlines():
            k, _, v = line.partition("=")
            k = k.strip().lower()
            v = v.strip()
            if k == "signal":
                signal = v
            elif k == "duration" and v.isdigit():
                duration = min(int(v), 10000)
        if signal == "10":
            signal = "*"
        elif signal == "11":
            signal = "#"
        if signal and _DTMF_RE.match(signal):
            return signal.upper(), duration
        return None
    if content_type == "application/dtmf":
        s = text.strip()
        if s.isdigit() and 0 <= int(s) <= 15:
            return "0123456789*#ABCD"[int(s)], 160
        if _DTMF_RE.match(s):
            return s.upper(), 160
    return None


def _allows(message: SipMessage, method: str) -> bool:
    """``method`` is among the message's ``Allow`` methods."""
    return method.lower() in option_tags(message, "Allow")


def challenge_of(response: SipResponse) -> "auth.Challenge | None":
    """The digest challenge to answer in a 401/407 (the strongest algorithm offered), if any."""
    hname = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    challenges = []
    for v in response.headers.get_all(hname):
        try:
            challenges.append(auth.parse_challenge(v))
        except RemoteProtocolError:
            continue
    return auth.select_challenge(challenges) if challenges else None
