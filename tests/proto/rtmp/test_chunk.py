from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError
from webgate.proto.rtmp.chunk import (
    AckReceived,
    BufferLengthSet,
    ChunkLimits,
    ChunkParser,
    ChunkSession,
    ChunkSizeChanged,
    ChunkWriter,
    PingResponseReceived,
    RtmpMessage,
    WindowAckSizeReceived,
    build_aggregate,
    encode_basic_header,
    set_chunk_size_payload,
    user_control_payload,
)


def _roundtrip(
    msgs: list[tuple[int, int, int, int, bytes]], chunk_size: int = 128
) -> list[RtmpMessage]:
    w = ChunkWriter()
    w.chunk_size = chunk_size
    p = ChunkParser()
    p.chunk_size = chunk_size
    data = b"".join(w.write(*m) for m in msgs)
    return p.feed(data)


def test_header_types_chosen_and_parsed() -> None:
    w = ChunkWriter()
    seq = [
        (4, 8, 1, 1000, b"a" * 10),  # fmt 0 (first on csid)
        (4, 8, 1, 1020, b"b" * 12),  # fmt 1 (length changed)
        (
            4,
            8,
            1,
            1040,
            b"c" * 12,
        ),  # fmt 2 (same length, delta 20 but previous header was fmt 1 with delta 20)
        (4, 8, 1, 1060, b"d" * 12),  # fmt 3
        (4, 8, 1, 1090, b"e" * 12),  # fmt 2 (delta changed)
        (4, 8, 2, 1100, b"f" * 12),  # fmt 0 (stream id changed)
        (4, 8, 2, 900, b"g" * 12),  # fmt 0 (timestamp went backwards)
    ]
    chunks = [w.write(*m) for m in seq]
    assert [c[0] >> 6 for c in chunks] == [0, 1, 3, 3, 2, 0, 0]
    parsed = ChunkParser().feed(b"".join(chunks))
    assert [
        (m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in parsed
    ] == seq


def test_fmt2_after_fmt0() -> None:
    w = ChunkWriter()
    a = w.write(3, 20, 0, 0, b"x" * 5)
    b = w.write(3, 20, 0, 0, b"y" * 5)
    assert a[0] >> 6 == 0 and b[0] >> 6 == 2
    assert [m.payload for m in ChunkParser().feed(a + b)] == [b"x" * 5, b"y" * 5]


def test_hand_made_fmt3_repeats_delta() -> None:
    # spec example: fmt0 ts 1000, fmt2 delta 20, then two fmt3 -> 1000, 1020, 1040, 1060
    data = (
        bytes([0x03])
        + (1000).to_bytes(3, "big")
        + (2).to_bytes(3, "big")
        + bytes([8])
        + struct.pack("<I", 1)
        + b"aa"
    )
    data += bytes([0x83]) + (20).to_bytes(3, "big") + b"bb"
    data += bytes([0xC3]) + b"cc" + bytes([0xC3]) + b"dd"
    msgs = ChunkParser().feed(data)
    assert [m.timestamp for m in msgs] == [1000, 1020, 1040, 1060]
    assert [m.payload for m in msgs] == [b"aa", b"bb", b"cc", b"dd"]


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 1000, 65599])
def test_basic_header_sizes(csid: int) -> None:
    hdr = encode_basic_header(0, csid)
    assert len(hdr) == (1 if csid < 64 else 2 if csid < 320 else 3)
    msgs = _roundtrip([(csid, 9, 1, 5, b"v" * 300)])
    assert msgs[0].csid == csid and msgs[0].payload == b"v" * 300


@pytest.mark.parametrize("csid", [0, 1, 65600])
def test_invalid_csid_for_writer(csid: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_basic_header(0, csid)


def test_extended_timestamp_on_all_chunks() -> None:
    w = ChunkWriter()
    ts = 0x01000000
    data = w.write(5, 9, 1, ts, b"z" * 300)  # 3 chunks
    # first chunk: 1 + 11 + 4 + 128; continuation chunks carry the extended timestamp too
    assert data[1:4] == b"\xff\xff\xff"
    assert data[12:16] == struct.pack(">I", ts)
    assert data[16 + 128] == 0xC5 and data[17 + 128 : 21 + 128] == struct.pack(">I", ts)
    # the following message with the same delta (fmt3 on new message) keeps the extended field
    data2 = w.write(5, 9, 1, ts + 0x01000000, b"y" * 300)
    data3 = w.write(5, 9, 1, ts + 0x02000000, b"x" * 300)
    assert data3[0] >> 6 == 3 and data3[1:5] == struct.pack(">I", 0x01000000)
    msgs = ChunkParser().feed(data + data2 + data3)
    assert [m.timestamp for m in msgs] == [ts, 2 * ts, 3 * ts]
    assert [m.payload for m in msgs] == [b"z" * 300, b"y" * 300, b"x" * 300]


def test_timestamp_exactly_ffffff_is_extended() -> None:
    msgs = _roundtrip(
        [(4, 8, 1, 0xFFFFFF, b"q" * 200), (4, 8, 1, 0xFFFFFFFF, b"r" * 200)]
    )
    assert [m.timestamp for m in msgs] == [0xFFFFFF, 0xFFFFFFFF]


def test_interleaved_chunk_streams() -> None:
    wa, wb = ChunkWriter(), ChunkWriter()
    a = wa.write(4, 8, 1, 10, b"A" * 300)  # chunks of 128: 1+11+128, 1+128, 1+44
    b = wb.write(6, 9, 1, 20, b"B" * 200)
    a_chunks = [a[:140], a[140:269], a[269:]]
    b_chunks = [b[:140], b[140:]]
    data = a_chunks[0] + b_chunks[0] + a_chunks[1] + b_chunks[1] + a_chunks[2]
    msgs = ChunkParser().feed(data)
    assert [(m.csid, m.payload) for m in msgs] == [(6, b"B" * 200), (4, b"A" * 300)]


def test_chunk_size_change_mid_stream_both_directions() -> None:
    s = ChunkSession()
    s.send(3, 20, 0, 0, b"a" * 300)
    s.set_chunk_size(1000)
    s.send(3, 20, 0, 0, b"b" * 900)
    out = s.data_to_send()
    assert s.writer.chunk_size == 1000
    peer = ChunkSession()
    msgs, events = peer.receive_data(out)
    assert [m.payload for m in msgs] == [b"a" * 300, b"b" * 900]
    assert events == [ChunkSizeChanged(1000)]
    assert peer.parser.chunk_size == 1000
    # single-chunk message of 900 bytes proves the new size was used
    assert (
        out.count(b"\xc3") == 2
    )  # two continuation chunks for the first 300-byte message only


def test_byte_by_byte_equals_bulk() -> None:
    w = ChunkWriter()
    data = w.write(2, 1, 0, 0, set_chunk_size_payload(50))
    w.chunk_size = 50
    data += w.write(3, 20, 0, 0, b"c" * 130) + w.write(4, 8, 1, 0x1234567, b"d" * 77)
    bulk = ChunkParser().feed(data)
    p = ChunkParser()
    single = [m for i in range(len(data)) for m in p.feed(data[i : i + 1])]
    assert bulk == single and len(bulk) == 3


def test_abort_discards_partial_message() -> None:
    w = ChunkWriter()
    big = w.write(4, 8, 1, 0, b"X" * 200)
    part = big[: 1 + 11 + 128]
    abort = ChunkWriter().write(2, 2, 0, 0, struct.pack(">I", 4))
    again = ChunkWriter().write(4, 8, 1, 5, b"Y" * 10)
    p = ChunkParser()
    msgs = p.feed(part + abort)
    assert [m.type_id for m in msgs] == [2]
    msgs = p.feed(again)
    assert [(m.payload, m.timestamp) for m in msgs] == [(b"Y" * 10, 5)]


def test_ack_sent_when_window_crossed() -> None:
    s = ChunkSession()
    w = ChunkWriter()
    _, ev = s.receive_data(w.write(2, 5, 0, 0, struct.pack(">I", 1000)))
    assert ev == [WindowAckSizeReceived(1000)]
    assert s.data_to_send() == b""
    payload = b"p" * 600
    s.receive_data(w.write(4, 8, 1, 0, payload))
    assert s.data_to_send() == b""  # ~ 16 + 620 bytes < 1000
    s.receive_data(w.write(4, 8, 1, 20, payload))
    out = ChunkParser().feed(s.data_to_send())
    assert len(out) == 1 and out[0].type_id == 3
    assert struct.unpack(">I", out[0].payload)[0] == s.bytes_received >= 1000


def test_ping_and_user_control() -> None:
    s = ChunkSession()
    w = ChunkWriter()
    _, ev = s.receive_data(w.write(2, 4, 0, 0, user_control_payload(6, 12345)))
    assert ev == []
    out = ChunkParser().feed(s.data_to_send())
    assert out[0].type_id == 4 and out[0].payload == user_control_payload(7, 12345)
    _, ev = s.receive_data(w.write(2, 4, 0, 0, user_control_payload(7, 99)))
    assert ev == [PingResponseReceived(99)]
    _, ev = s.receive_data(w.write(2, 4, 0, 0, user_control_payload(3, 1, 3000)))
    assert ev == [BufferLengthSet(1, 3000)]
    _, ev = s.receive_data(w.write(2, 3, 0, 0, struct.pack(">I", 777)))
    assert ev == [AckReceived(777)]
    with pytest.raises(RemoteProtocolError):
        s.receive_data(w.write(2, 4, 0, 0, b"\x00"))


def test_peer_bandwidth_and_window_sent() -> None:
    s = ChunkSession()
    s.send_window_ack_size(2500000)
    s.send_peer_bandwidth(2500000, 2)
    msgs = ChunkParser().feed(s.data_to_send())
    assert [(m.type_id, m.payload, m.csid) for m in msgs] == [
        (5, struct.pack(">I", 2500000), 2),
        (6, struct.pack(">IB", 2500000, 2), 2),
    ]


def test_aggregate_split_with_adjusted_timestamps() -> None:
    body = build_aggregate([(8, 5000, b"a1"), (9, 5020, b"v1"), (8, 5040, b"a2")])
    s = ChunkSession()
    msgs, _ = s.receive_data(ChunkWriter().write(4, 22, 1, 100, body))
    assert [(m.type_id, m.timestamp, m.payload, m.stream_id) for m in msgs] == [
        (8, 100, b"a1", 1),
        (9, 120, b"v1", 1),
        (8, 140, b"a2", 1),
    ]
    with pytest.raises(RemoteProtocolError):
        ChunkSession().receive_data(ChunkWriter().write(4, 22, 1, 100, body[:-3]))
    with pytest.raises(RemoteProtocolError):
        ChunkSession().receive_data(
            ChunkWriter().write(4, 22, 1, 0, build_aggregate([(20, 0, b"x")]))
        )


@pytest.mark.parametrize("size", [0, 2**31, 2**31 + 5, 65537, 0xFFFFFFFF])
def test_absurd_chunk_size_rejected(size: int) -> None:
    data = ChunkWriter().write(2, 1, 0, 0, struct.pack(">I", size))
    with pytest.raises(RemoteProtocolError):
        ChunkParser(ChunkLimits(max_chunk_size=65536)).feed(data)


def test_max_chunk_size_accepted() -> None:
    p = ChunkParser(ChunkLimits(max_chunk_size=65536))
    p.feed(ChunkWriter().write(2, 1, 0, 0, struct.pack(">I", 65536)))
    assert p.chunk_size == 65536


def test_message_length_limit() -> None:
    hdr = (
        bytes([0x04])
        + b"\x00\x00\x00"
        + (2000).to_bytes(3, "big")
        + b"\x08"
        + b"\x01\x00\x00\x00"
    )
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        ChunkParser(ChunkLimits(max_message_length=1000)).feed(hdr)


def test_chunk_stream_limit() -> None:
    p = ChunkParser(ChunkLimits(max_chunk_streams=3))
    w = ChunkWriter()
    p.feed(
        w.write(3, 8, 1, 0, b"a")
        + w.write(4, 8, 1, 0, b"a")
        + w.write(5, 8, 1, 0, b"a")
    )
    with pytest.raises(RemoteProtocolError, match="too many"):
        p.feed(w.write(6, 8, 1, 0, b"a"))


def test_buffered_bytes_limit() -> None:
    p = ChunkParser(ChunkLimits(max_buffered_bytes=300, max_message_length=1000))
    w = ChunkWriter()
    data = (
        w.write(3, 8, 1, 0, b"a" * 1000)[:140] + w.write(4, 8, 1, 0, b"a" * 1000)[:140]
    )
    data += w.write(5, 8, 1, 0, b"a" * 1000)[:140]
    with pytest.raises(RemoteProtocolError, match="partially"):
        p.feed(data)


@pytest.mark.parametrize("first", [0x43, 0x83, 0xC3])
def test_compressed_header_without_state(first: int) -> None:
    with pytest.raises(RemoteProtocolError):
        ChunkParser().feed(bytes([first]) + b"\x00" * 20)


def test_new_header_interrupting_message_is_error() -> None:
    w = ChunkWriter()
    first = w.write(4, 8, 1, 0, b"a" * 200)[:140]
    with pytest.raises(RemoteProtocolError, match="interrupts"):
        ChunkParser().feed(first + ChunkWriter().write(4, 8, 1, 0, b"b"))


_messages = st.lists(
    st.tuples(
        st.integers(2, 400),
        st.sampled_from([8, 9, 18, 20]),
        st.integers(0, 3),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=700),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(_messages, st.integers(1, 600), st.data())
def test_fuzz_roundtrip(
    msgs: list[tuple[int, int, int, int, bytes]], chunk_size: int, data: st.DataObject
) -> None:
    msgs = sorted(msgs, key=lambda m: m[3])  # writer keeps deltas non-negative per csid
    w = ChunkWriter()
    w.chunk_size = chunk_size
    blob = b"".join(w.write(*m) for m in msgs)
    p = ChunkParser()
    p.chunk_size = chunk_size
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=8)))
    out: list[RtmpMessage] = []
    prev = 0
    for c in cuts + [len(blob)]:
        out += p.feed(blob[prev:c])
        prev = c
    assert [
        (m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in out
    ] == msgs


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_parser_garbage(blob: bytes) -> None:
    s = ChunkSession(ChunkLimits(max_message_length=5000, max_chunk_streams=8))
    try:
        s.receive_data(blob)
    except RemoteProtocolError:
        pass


def _valid_blob() -> bytes:
    w = ChunkWriter()
    blob = w.write(2, 1, 0, 0, set_chunk_size_payload(60))
    w.chunk_size = 60
    blob += w.write(2, 5, 0, 0, struct.pack(">I", 100))
    for i in range(6):
        blob += w.write(
            4 + i % 2, 8 + i % 2, 1, i * 0x800000, bytes([i]) * (50 + 40 * i)
        )
    blob += w.write(2, 4, 0, 0, user_control_payload(6, 1))
    blob += w.write(4, 22, 1, 0, build_aggregate([(8, 1, b"a"), (9, 2, b"b")]))
    return blob


_VALID = _valid_blob()


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_parser_mutations(flips: list[tuple[int, int]]) -> None:
    blob = bytearray(_VALID)
    for pos, val in flips:
        blob[pos] = val
    s = ChunkSession(ChunkLimits(max_message_length=5000, max_chunk_streams=8))
    try:
        s.receive_data(bytes(blob))
    except RemoteProtocolError:
        pass
    s.data_to_send()


def test_valid_blob_parses() -> None:
    msgs, _ = ChunkSession().receive_data(_VALID)
    assert [m.type_id for m in msgs] == [8, 9, 8, 9, 8, 9, 8, 9]
    assert [m.timestamp for m in msgs[:6]] == [i * 0x800000 for i in range(6)]
