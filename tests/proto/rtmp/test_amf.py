from __future__ import annotations

import datetime
import struct
import sys
from typing import Any

import pyamf  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.rtmp.amf import (
    _MAX_DEPTH,
    MSG_COMMAND_AMF0,
    MixedArray,
    TypedObject,
    Undefined,
    decode_amf0,
    decode_amf3,
    decode_command,
    decode_message_values,
    encode_amf0,
    encode_amf3,
    encode_command,
    encode_data,
)


def _s(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x00" + struct.pack(">d", 1.5), 1.5),
        (b"\x00" + struct.pack(">d", 3.0), 3),
        (b"\x01\x01", True),
        (b"\x01\x00", False),
        (b"\x02" + _s("héllo".encode()), "héllo"),
        (b"\x0c" + struct.pack(">I", 3) + b"abc", "abc"),
        (b"\x05", None),
        (b"\x06", Undefined),
        (
            b"\x03" + _s(b"a") + b"\x00" + struct.pack(">d", 1) + b"\x00\x00\x09",
            {"a": 1},
        ),
        (
            b"\x08"
            + struct.pack(">I", 1)
            + _s(b"k")
            + b"\x02"
            + _s(b"v")
            + b"\x00\x00\x09",
            {"k": "v"},
        ),
        (b"\x0a" + struct.pack(">I", 2) + b"\x05\x02" + _s(b"x"), [None, "x"]),
        (
            b"\x0b" + struct.pack(">d", 1577836800000.0) + b"\x00\x00",
            datetime.datetime(2020, 1, 1),
        ),
        (b"\x11\x04\x05", 5),  # AMF3 switch + AMF3 integer
        (b"\x11\x06\x07abc", "abc"),  # AMF3 switch + AMF3 string
    ],
)
def test_amf0_types(raw: bytes, expected: Any) -> None:
    values = decode_amf0(raw)
    assert values == [expected]
    assert type(values[0]) is type(expected) or isinstance(values[0], dict)


def test_ecma_array_type_and_strict_array_roundtrip() -> None:
    v = decode_amf0(encode_amf0(MixedArray(a=1, b="2"), [1, "two", None, True]))
    assert isinstance(v[0], pyamf.MixedArray) and v[0] == {"a": 1, "b": "2"}
    assert v[1] == [1, "two", None, True]


def test_long_string_encoding() -> None:
    s = "y" * 70000
    raw = encode_amf0(s)
    assert raw[0] == 0x0C
    assert decode_amf0(raw) == [s]


def test_typed_object_never_imports_modules() -> None:
    name = b"this.Zen"
    raw = (
        b"\x10" + _s(name) + _s(b"x") + b"\x00" + struct.pack(">d", 1) + b"\x00\x00\x09"
    )
    sys.modules.pop("this", None)
    (obj,) = decode_amf0(raw)
    assert isinstance(obj, TypedObject) and obj.alias == "this.Zen" and obj["x"] == 1
    raw3 = b"\x0a\x03" + bytes([len(name) << 1 | 1]) + name
    (obj3,) = decode_amf3(raw3)
    assert isinstance(obj3, TypedObject)
    (obj4,) = decode_amf0(b"\x11" + raw3)
    assert isinstance(obj4, TypedObject)
    assert "this" not in sys.modules


def test_amf3_values_roundtrip() -> None:
    values = [
        0,
        -1,
        2**28 - 1,
        2**29,
        1.25,
        "s",
        "",
        True,
        False,
        None,
        [1, 2, "3"],
        {"k": [1, {"n": None}]},
    ]
    assert decode_amf3(encode_amf3(*values)) == values


def test_amf3_bytearray_and_date() -> None:
    ba = pyamf.amf3.ByteArray(b"\x00\x01\x02")
    d = datetime.datetime(2021, 5, 6, 7, 8, 9)
    out = decode_amf3(encode_amf3(ba, d))
    assert bytes(out[0].getvalue()) == b"\x00\x01\x02"
    assert out[1] == d


def test_amf3_references() -> None:
    shared = {"a": 1}
    out = decode_amf3(encode_amf3([shared, shared, "str", "str"]))
    assert out == [[{"a": 1}, {"a": 1}, "str", "str"]]


def test_amf0_encoder_with_amf3_switch() -> None:
    raw = encode_amf0({"a": [1, 2]}, use_amf3=True)
    assert raw[0] == 0x11
    assert decode_amf0(raw) == [{"a": [1, 2]}]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x02\x00\x05ab",  # short string
        b"\x0e",  # RecordSet marker: not decodable
        b"\x12",  # unknown marker
        b"\x07\x00\x05",  # bad reference
        b"\x03\x00\x01a\x05",  # unterminated object
        b"\x02\x00\x02\xff\xfe",  # invalid UTF-8
        b"\x11\x0a\x07\x03a",  # externalizable unknown class
        b"\x0a\x00\x00\x00\x01" * 3000,  # deep nesting
        b"\x0c\xff\xff\xff\xff",  # long string longer than the data
        b"\x0a\xff\xff\xff\xff\x05",  # strict array count far past the data
    ],
)
def test_invalid_amf0(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_amf0(raw)


@pytest.mark.parametrize(
    "raw", [b"\x06\x09ab", b"\x09\xff\xff\xff\xff", b"\x14", b"\x0a\x0b"]
)
def test_invalid_amf3(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_amf3(raw)


def _amf0_nested(levels: int) -> bytes:
    """``levels`` values nested in each other: strict arrays of one, innermost a null."""
    return b"\x0a\x00\x00\x00\x01" * (levels - 1) + b"\x05"


def _amf3_nested(levels: int) -> bytes:
    """The same in AMF3: dense arrays of one (count 1, no associative part), innermost a null."""
    return b"\x09\x03\x01" * (levels - 1) + b"\x01"


def test_nesting_up_to_max_depth_decodes() -> None:
    v = decode_amf0(_amf0_nested(_MAX_DEPTH))[0]
    for _ in range(_MAX_DEPTH - 1):
        assert isinstance(v, list) and len(v) == 1
        v = v[0]
    assert v is None
    assert decode_amf3(_amf3_nested(_MAX_DEPTH))[0] is not None
    # the AMF0 -> AMF3 switch counts as a level of its own
    assert decode_amf0(b"\x11" + _amf3_nested(_MAX_DEPTH - 1))[0] is not None


@pytest.mark.parametrize("levels", [_MAX_DEPTH + 1, 3000, 200_000])
@pytest.mark.parametrize("encode", [_amf0_nested, _amf3_nested, lambda n: _amf0_nested(n // 2)[:-1] + b"\x11" + _amf3_nested(n - n // 2)])
def test_nesting_past_max_depth_is_a_clean_protocol_error(levels: int, encode: Any) -> None:
    """Refused at the limit (not by Python's recursion limit, whatever it is), across AMF0, AMF3
    and the switch between them, as a message decode and as a command."""
    raw = encode(levels)
    decode = decode_amf3 if encode is _amf3_nested else decode_amf0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # far above what _MAX_DEPTH levels need: the limit must be ours
    try:
        with pytest.raises(RemoteProtocolError, match=f"nested deeper than {_MAX_DEPTH} levels"):
            decode(raw)
        if decode is decode_amf0:
            body = encode_amf0("connect", 1.0) + raw
            with pytest.raises(RemoteProtocolError, match="nested deeper"):
                decode_command(MSG_COMMAND_AMF0, body)
    finally:
        sys.setrecursionlimit(limit)


def test_commands_amf0_and_amf3() -> None:
    t, body = encode_command(
        "connect", 1, {"app": "call", "objectEncoding": 3}, "arg1", 2
    )
    assert t == 20
    cmd = decode_command(t, body)
    assert (cmd.name, cmd.transaction_id, cmd.command_object, cmd.args) == (
        "connect",
        1,
        {"app": "call", "objectEncoding": 3},
        ["arg1", 2],
    )
    t, body = encode_command("invite", 3, None, "sip:bob@example.org", amf3=True)
    assert t == 17 and body[0] == 0
    cmd = decode_command(t, body)
    assert cmd.name == "invite" and cmd.args == ["sip:bob@example.org"]
    # type 17 body with AMF3-switched values, as Flash Player sends with objectEncoding 3
    raw = (
        b"\x00"
        + encode_amf0("invite", 4)
        + b"\x05"
        + encode_amf0({"x": 1}, use_amf3=True)
    )
    assert decode_command(17, raw).args == [{"x": 1}]
    t, body = encode_data("onMetaData", {"duration": 0}, amf3=True)
    assert t == 15 and decode_message_values(t, body) == ["onMetaData", {"duration": 0}]


@pytest.mark.parametrize("body", [b"", encode_amf0(5), encode_amf0("x", "notanumber")])
def test_bad_commands(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_command(20, body)


_amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=5), children, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_amf_values, max_size=4))
def test_fuzz_amf0_roundtrip(values: list[Any]) -> None:
    assert decode_amf0(encode_amf0(*values)) == values


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_amf_decoding(blob: bytes) -> None:
    for fn in (decode_amf0, decode_amf3):
        try:
            fn(blob)
        except RemoteProtocolError:
            pass
    try:
        decode_command(17, blob)
    except RemoteProtocolError:
        pass
