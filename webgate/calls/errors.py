"""Errors the call layer reports to clients (a stable code plus a human message), and the
errors it catches from the adapters that implement its ports (``calls/interfaces.py``)."""

from __future__ import annotations

# CallRefused is defined on neutral ground (webgate/syntax.py) so that security/ can raise it
# too (an invalid call token); the call layer and everything above import it from here.
from webgate.syntax import CallRefused as CallRefused


class NoPortsAvailable(Exception):
    """No free RTP port pair: raised by a :class:`~webgate.calls.interfaces.PortAllocator`
    (``adapters/rtp.py`` ``RtpPortPool``); the call is refused with ``no_media_ports``."""


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
# authorisation (call tokens, docs/protocol.md "Call tokens")
TOKEN_REQUIRED = "token_required"  # 403: a non-public destination without a token
# INVALID_TOKEN ("invalid_token", 401: bad signature, malformed, wrong iss/aud, bad claim, nbf) and
# TOKEN_EXPIRED ("token_expired", 401): webgate/security/tokens.py, which raises them
DISPLAY_NAME_NOT_ALLOWED = "display_name_not_allowed"  # 403: differs from the token's
CALLER_ID_NOT_ALLOWED = "caller_id_not_allowed"  # 403: differs from the token's
SESSION_ID_NOT_ALLOWED = "session_id_not_allowed"  # 403: differs from the token's
# limits
TOO_MANY_CALLS_FOR_IDENTITY = "too_many_calls_for_identity"  # 429: limits.max_calls_per_identity
TOO_MANY_CALLS_FROM_IP = "too_many_calls_from_ip"  # 429: limits.max_calls_per_ip
RATE_LIMITED = "rate_limited"  # 429: limits.max_attempts_per_ip_per_minute
# a cluster node (docs/cluster.md)
CLUSTER_UNAVAILABLE = "cluster_unavailable"  # 503: Redis unreachable and [cluster] on_redis_down = "refuse"
# hold/resume (CallManager.hold: a SIP re-INVITE)
HOLD_PENDING = "hold_pending"  # an offer/answer exchange (ours or the far end's) is in progress
HOLD_FAILED = "hold_failed"  # the far end refused the re-INVITE (its SIP status); the call stays up
