"""SIP extension headers: option tags (``Require``/``Supported``/``Unsupported``, RFC 3261
§20.32/§20.37), reliable provisional responses' ``RSeq``/``RAck`` (RFC 3262) and session
timers' ``Session-Expires``/``Min-SE`` (RFC 4028), with the timer's arithmetic
(:class:`SessionTimer`). Parsing and formatting only, sans-IO: the user agent
(``useragent.py``) runs the state machines."""

from __future__ import annotations

import re
from dataclasses import dataclass

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.sip.message import SipMessage

#: the option tags this user agent implements: a request that requires another gets 420
SUPPORTED_OPTIONS = frozenset({"100rel", "timer", "replaces"})
#: RFC 4028 §4: no Session-Expires / Min-SE may be below 90 seconds
MIN_SE_FLOOR = 90
#: the largest interval we accept or send (a day)
MAX_SESSION_EXPIRES = 86400

_DELTA_RE = re.compile(r"^[0-9]{1,10}\Z")
_RACK_RE = re.compile(r"^([0-9]{1,10})\s+([0-9]{1,10})\s+([A-Za-z]+)\Z")


def option_tags(message: SipMessage, name: str) -> set[str]:
    """The option tags of every ``name`` header (``Require``, ``Supported``, ...), lower-cased."""
    tags: set[str] = set()
    for value in message.headers.get_all(name):
        for part in value.split(","):
            tag = part.strip().lower()
            if tag:
                tags.add(tag)
    return tags


def unsupported_required(message: SipMessage) -> list[str]:
    """The ``Require`` option tags of ``message`` this user agent does not implement, sorted."""
    return sorted(option_tags(message, "Require") - SUPPORTED_OPTIONS)


def _delta(text: str, what: str) -> int:
    text = text.strip()
    if not _DELTA_RE.match(text):
        raise RemoteProtocolError(f"bad {what}: {text[:40]!r}", 400)
    return int(text)


@dataclass(frozen=True)
class SessionExpires:
    """``Session-Expires: <interval>[;refresher=uac|uas]``; ``refresher`` None when absent."""

    interval: int
    refresher: str | None = None

    def __str__(self) -> str:
        return f"{self.interval};refresher={self.refresher}" if self.refresher else str(self.interval)


def parse_session_expires(value: str) -> SessionExpires:
    head, _, params = value.partition(";")
    interval = _delta(head, "Session-Expires")
    refresher: str | None = None
    for param in params.split(";"):
        k, _, v = param.partition("=")
        if k.strip().lower() == "refresher":
            r = v.strip().lower()
            if r not in ("uac", "uas"):
                raise RemoteProtocolError(f"bad Session-Expires refresher: {r[:10]!r}", 400)
            refresher = r
    return SessionExpires(interval, refresher)


def session_expires_of(message: SipMessage) -> SessionExpires | None:
    """The message's ``Session-Expires`` (compact form ``x`` included), None when it has none.
    Raises :class:`RemoteProtocolError` (400) for a malformed one."""
    value = message.headers.get("Session-Expires")
    return parse_session_expires(value) if value is not None else None


def min_se_of(message: SipMessage) -> int | None:
    """The message's ``Min-SE`` delta-seconds (its parameters ignored), None when absent."""
    value = message.headers.get("Min-SE")
    if value is None:
        return None
    return _delta(value.partition(";")[0], "Min-SE")


def parse_rseq(value: str) -> int:
    n = _delta(value, "RSeq")
    if not 1 <= n <= 2**32 - 1:
        raise RemoteProtocolError("RSeq out of range", 400)
    return n


@dataclass(frozen=True)
class RAck:
    """``RAck: <rseq> <cseq> <method>`` of a PRACK (RFC 3262 §7.2)."""

    rseq: int
    cseq: int
    method: str

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def parse_rack(value: str | None) -> RAck:
    m = _RACK_RE.match((value or "").strip())
    if m is None:
        raise RemoteProtocolError("PRACK without a valid RAck", 400)
    return RAck(int(m.group(1)), int(m.group(2)), m.group(3).upper())


@dataclass
class SessionTimer:
    """The session timer of one dialog (RFC 4028).

    ``requested`` is what we ask for in our INVITE (0: we do not ask); ``min_se`` the largest
    Min-SE either side stated; ``interval`` the negotiated one (0: no timer runs) and
    ``local_refresher`` who refreshes. :attr:`deadline` is when something is due: our refresh
    at half the interval, or, when the far end refreshes, the BYE at the interval minus
    min(32, interval/3) (§10)."""

    requested: int = 0
    min_se: int = MIN_SE_FLOOR
    interval: int = 0
    local_refresher: bool = False
    started_at: float = 0.0

    @property
    def running(self) -> bool:
        return self.interval > 0

    def start(self, interval: int, local_refresher: bool, now: float) -> None:
        self.interval = interval
        self.local_refresher = local_refresher
        self.started_at = now

    def stop(self) -> None:
        self.interval = 0

    @property
    def deadline(self) -> float | None:
        if not self.interval:
            return None
        if self.local_refresher:
            return self.started_at + self.interval / 2.0
        return self.started_at + self.interval - min(32.0, self.interval / 3.0)

    @property
    def expires_at(self) -> float | None:
        """When the session expires if nobody refreshes it."""
        return self.started_at + self.interval if self.interval else None

    def request_value(self) -> str:
        """``Session-Expires`` for a refresh (or re-offer) we send: the current interval, and
        who refreshes seen from our request (``uac`` = us)."""
        return str(SessionExpires(self.interval, "uac" if self.local_refresher else "uas"))
