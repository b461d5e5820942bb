"""Errors raised by the sans-IO protocol cores.

Cores never ``assert`` on input. Input from the network that is wrong raises
:class:`RemoteProtocolError` (with a hint of the status an adapter should answer,
e.g. SIP 400 or 488); a misuse by our own code raises :class:`LocalProtocolError`.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error a protocol core raises."""

    def __init__(self, message: str, status_hint: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_hint = status_hint


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid (bad syntax, size limit exceeded, ...)."""


class LocalProtocolError(ProtocolError):
    """Our own code asked the core for something invalid (e.g. a header value with CR/LF)."""
