"""Errors the call layer reports to clients: a stable code plus a human message."""

from __future__ import annotations


class CallRefused(Exception):
    """A call that cannot be placed. ``code`` is stable and documented in docs/protocol.md."""

    def __init__(self, code: str, message: str, sip_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.sip_status = sip_status


# Stable refusal codes (documented in docs/protocol.md)
INVALID_DESTINATION = "invalid_destination"
DESTINATION_NOT_ALLOWED = "destination_not_allowed"
INVALID_SESSION_ID = "invalid_session_id"
SESSION_ID_IN_USE = "session_id_in_use"
INVALID_DISPLAY_NAME = "invalid_display_name"
TOO_MANY_CALLS = "too_many_calls"
SHUTTING_DOWN = "shutting_down"
NO_MEDIA_PORTS = "no_media_ports"
INTERNAL_ERROR = "internal_error"
