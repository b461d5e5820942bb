"""Text from clients and peers, made safe for a log line.

Anything a client or a peer chose (SIP header values, URIs and user names, RTMP app and stream
names, WebSocket fields, token claims, HTTP paths, a core's error message that quotes input) goes
into a log event through :func:`safe`: a CR/LF cannot forge a second log line, an ESC sequence
cannot drive the operator's terminal, bidi and other invisible format characters cannot disguise
what is written, and one field cannot fill the log (it is truncated). The JSON log format escapes
on its own; the text format and anything reading event fields directly (observers, journald)
need this.

Pure standard library, no webgate imports: usable from every layer, the sans-IO cores included.
"""

from __future__ import annotations

__all__ = ["MAX_CHARS", "safe"]

MAX_CHARS = 256
"""Longest field kept by default; longer text is cut and says how much was cut."""

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    if ch == " " or ch.isprintable():
        return ch
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a bytes value (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(value: object, limit: int | None = MAX_CHARS) -> str:
    """``value`` as text for a log field: control, format and separator characters (C0, DEL, C1,
    U+2028/2029, bidi overrides, ...) and the backslash escaped Python-style (``\\r``, ``\\n``,
    ``\\x1b``, ``\\u202e``), so the result is one printable line and no two inputs look alike;
    bytes are decoded as UTF-8 (undecodable bytes become ``\\xNN``); ``None`` stays ``None``'s text.
    With ``limit`` (characters of input, default :data:`MAX_CHARS`; ``None`` = no limit) a longer
    value is cut and ends with ``...(+N)``, N the characters cut."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", "surrogateescape")
    else:
        text = value if isinstance(value, str) else str(value)
    cut = 0
    if limit is not None and len(text) > limit:
        cut = len(text) - limit
        text = text[:limit]
    if not (text.isprintable() and "\\" not in text):
        text = "".join(map(_escape_char, text))
    return f"{text}...(+{cut})" if cut else text
