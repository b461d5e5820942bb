"""What a client sends, checked the same way wherever it arrives: the syntax of a destination
(a dial string, never a URI) and of a session ID, and :class:`CallRefused`, the refusal with a
stable code that a client gets for such input (and for anything the call layer refuses later).

Neutral ground under calls/ (dial plan, session IDs, admission) and security/ (a token's claims
are validated like client input; an invalid token is a :class:`CallRefused`); it imports nothing
of webgate. The stable codes are listed in ``webgate/calls/errors.py`` (the two token codes in
``webgate/security/tokens.py``), and ``webgate.calls.errors`` is where the call layer and
everything above it import :class:`CallRefused` from.
"""

from __future__ import annotations

import re
from typing import TypeGuard

__all__ = [
    "DESTINATION_RULE",
    "SESSION_ID_RULE",
    "CallRefused",
    "is_valid_destination",
    "is_valid_session_id",
]


class CallRefused(Exception):
    """A call that cannot be placed. ``code`` is stable and documented in docs/protocol.md."""

    def __init__(self, code: str, message: str, sip_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.sip_status = sip_status


# What a client may type as a destination: a dial string, not a URI.
_DEST_RE = re.compile(r"[A-Za-z0-9+*#._\-]{1,64}")
#: the message of an ``invalid_destination`` refusal for bad syntax
DESTINATION_RULE = "destination must be 1-64 characters of letters, digits, + * # . _ -"

_SESSION_ID_RE = re.compile(r"[0-9]{8,10}")
#: the message of an ``invalid_session_id`` refusal
SESSION_ID_RULE = "session ID must be 8 to 10 digits"


def is_valid_destination(value: object) -> TypeGuard[str]:
    """``value`` is a dial string: 1-64 of ``A-Za-z0-9+*#._-`` (no SIP syntax, no spaces)."""
    return isinstance(value, str) and _DEST_RE.fullmatch(value) is not None


def is_valid_session_id(value: object) -> TypeGuard[str]:
    """``value`` is a session ID: a string of 8-10 digits."""
    return isinstance(value, str) and _SESSION_ID_RE.fullmatch(value) is not None
