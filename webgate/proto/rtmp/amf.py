"""AMF0 / AMF3 encoding for RTMP messages, on top of Py3AMF (``pyamf``).

Decoding is hardened: typed objects never make pyamf import modules or instantiate Python classes
by their alias name (stock pyamf would do ``import a.b`` for an alias ``a.b.C``); unknown aliases
become :class:`pyamf.TypedObject`. Values nest at most :data:`_MAX_DEPTH` deep, counted across AMF0
and the AMF3 values it switches to (a deeper value is refused before Python's recursion limit is
near). Every decoding failure becomes :class:`RemoteProtocolError`.

Message bodies:
* type 20 (AMF0 command) / 18 (AMF0 data): a sequence of AMF0 values;
* type 17 (AMF3 command) / 15 (AMF3 data): one format byte (0) then AMF0 values, where complex values
  may switch to AMF3 with marker 0x11.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyamf  # type: ignore[import-untyped,import-not-found,unused-ignore]
from pyamf import amf0, amf3

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

MSG_DATA_AMF3 = 15
MSG_COMMAND_AMF3 = 17
MSG_DATA_AMF0 = 18
MSG_COMMAND_AMF0 = 20

Undefined = pyamf.Undefined
ASObject = pyamf.ASObject
MixedArray = pyamf.MixedArray
TypedObject = pyamf.TypedObject

_MAX_DEPTH = 64
"""Deepest nesting of AMF values accepted (the message's top-level values are depth 1). Real
clients send commands a few levels deep; each level costs several Python frames in pyamf."""


class _DepthLimited:
    """Mixin for pyamf decoders: refuses values nested deeper than ``_MAX_DEPTH``. ``_depth`` is a
    one-item list shared by an AMF0 decoder and the AMF3 decoder it switches to."""

    _depth: list[int]

    def readElement(self) -> Any:  # pyamf's name
        depth = self._depth
        if depth[0] >= _MAX_DEPTH:
            raise RemoteProtocolError(f"AMF value nested deeper than {_MAX_DEPTH} levels")
        depth[0] += 1
        try:
            return super().readElement()  # type: ignore[misc]
        finally:
            depth[0] -= 1


def _safe_alias(name: Any) -> Any:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if not isinstance(name, str):
        return pyamf.get_class_alias(
            name
        )  # ASObject and other Python classes: no import
    cached = pyamf.CLASS_CACHE.get(name)
    if cached is not None:
        return (
            cached
            if isinstance(cached, pyamf.ClassAlias)
            else pyamf.get_class_alias(cached)
        )
    return pyamf.TypedObjectClassAlias(name)


class _SafeAmf3Context(amf3.Context):  # type: ignore[misc]
    def getClassAlias(self, klass: Any) -> Any:
        if isinstance(klass, (str, bytes)):
            return _safe_alias(klass)
        return super().getClassAlias(klass)


class _SafeAmf3Decoder(_DepthLimited, amf3.Decoder):  # type: ignore[misc]
    def __init__(self, *args: Any, depth: list[int] | None = None, **kwargs: Any) -> None:
        self._depth = depth if depth is not None else [0]
        super().__init__(*args, **kwargs)

    def buildContext(self, **kwargs: Any) -> Any:
        return _SafeAmf3Context(**kwargs)

    def _getClassDefinition(self, ref: int) -> Any:
        is_ref = ref & amf3.REFERENCE_BIT == 0
        ref >>= 1
        if is_ref:
            return self.context.getClassByReference(ref)
        name = self.readBytes()
        if name == "":
            alias = pyamf.get_class_alias(pyamf.ASObject)
        else:
            alias = _safe_alias(name)
        class_def = amf3.ClassDefinition(alias)
        class_def.encoding = ref & 0x03
        class_def.attr_len = ref >> 2
        class_def.static_properties = []
        for _ in range(class_def.attr_len):
            class_def.static_properties.append(self.readString())
        self.context.addClass(class_def, alias.klass)
        return class_def


class _SafeAmf0Context(amf0.Context):  # type: ignore[misc]
    def getClassAlias(self, klass: Any) -> Any:
        if isinstance(klass, (str, bytes)):
            return _safe_alias(klass)
        return super().getClassAlias(klass)

    def getAMF3Decoder(self, amf0_decoder: Any) -> Any:
        decoder = self.extra.get("amf3_decoder")
        if decoder is None:
            decoder = _SafeAmf3Decoder(
                stream=amf0_decoder.stream,
                timezone_offset=amf0_decoder.timezone_offset,
                depth=amf0_decoder._depth,  # one nesting count across the switch
            )
            self.extra["amf3_decoder"] = decoder
        return decoder


class _SafeAmf0Decoder(_DepthLimited, amf0.Decoder):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._depth = [0]
        super().__init__(*args, **kwargs)

    def buildContext(self, **kwargs: Any) -> Any:
        return _SafeAmf0Context(**kwargs)


def _decode_all(decoder: Any, data: bytes) -> list[Any]:
    values: list[Any] = []
    try:
        while decoder.stream.remaining() > 0:
            values.append(decoder.readElement())
    except RemoteProtocolError:
        raise
    except RecursionError:
        raise RemoteProtocolError("AMF value nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - pyamf raises IOError, DecodeError, struct.error, UnicodeError, ...
        raise RemoteProtocolError(
            f"invalid AMF data: {type(exc).__name__}: {exc}"
        ) from None
    return values


def decode_amf0(data: bytes) -> list[Any]:
    """Decode all AMF0 values in ``data`` (AMF3 switch markers are followed)."""
    return _decode_all(_SafeAmf0Decoder(stream=bytes(data)), data)


def decode_amf3(data: bytes) -> list[Any]:
    """Decode all AMF3 values in ``data``."""
    return _decode_all(_SafeAmf3Decoder(stream=bytes(data)), data)


def encode_amf0(*values: Any, use_amf3: bool = False) -> bytes:
    """Encode values as AMF0; with ``use_amf3`` each value is written as AMF0 switch (0x11) + AMF3."""
    try:
        enc = amf0.Encoder()
        enc.use_amf3 = (
            use_amf3  # pyamf's constructor cannot take it (passes it on to _Codec)
        )
        for v in values:
            enc.writeElement(v)
        return bytes(enc.stream.getvalue())
    except Exception as exc:  # noqa: BLE001 - pyamf raises many types
        raise LocalProtocolError(f"cannot encode AMF0: {exc}") from None


def encode_amf3(*values: Any) -> bytes:
    try:
        enc = amf3.Encoder()
        for v in values:
            enc.writeElement(v)
        return bytes(enc.stream.getvalue())
    except Exception as exc:  # noqa: BLE001 - pyamf raises many types
        raise LocalProtocolError(f"cannot encode AMF3: {exc}") from None


def decode_message_values(type_id: int, payload: bytes) -> list[Any]:
    """Values of a command (20/17) or data (18/15) message body."""
    if type_id in (MSG_COMMAND_AMF3, MSG_DATA_AMF3):
        if not payload:
            return []
        if payload[0] == 0:
            payload = payload[1:]
        return decode_amf0(payload)
    if type_id in (MSG_COMMAND_AMF0, MSG_DATA_AMF0):
        return decode_amf0(payload)
    raise LocalProtocolError(f"message type {type_id} is not AMF")


@dataclass(frozen=True)
class Command:
    name: str
    transaction_id: float
    command_object: Any
    args: list[Any]


def decode_command(type_id: int, payload: bytes) -> Command:
    values = decode_message_values(type_id, payload)
    if not values or not isinstance(values[0], str):
        raise RemoteProtocolError("command message without a command name")
    name = values[0]
    tid: Any = values[1] if len(values) > 1 else 0
    if isinstance(tid, bool) or not isinstance(tid, (int, float)):
        if tid is None or tid is Undefined:
            tid = 0
        else:
            raise RemoteProtocolError(
                f"command {name!r}: transaction id is not a number"
            )
    cmd_obj = values[2] if len(values) > 2 else None
    return Command(name, tid, cmd_obj, values[3:])


def encode_command(
    name: str,
    transaction_id: float,
    command_object: Any,
    *args: Any,
    amf3: bool = False,
) -> tuple[int, bytes]:
    """(type_id, payload) of a command; with ``amf3`` the message is type 17 (leading 0 byte)."""
    body = encode_amf0(name, transaction_id, command_object, *args)
    if amf3:
        return MSG_COMMAND_AMF3, b"\x00" + body
    return MSG_COMMAND_AMF0, body


def encode_data(name: str, *values: Any, amf3: bool = False) -> tuple[int, bytes]:
    body = encode_amf0(name, *values)
    if amf3:
        return MSG_DATA_AMF3, b"\x00" + body
    return MSG_DATA_AMF0, body
