from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import RemoteProtocolError
from webgate.proto.rtmp.handshake import (
    FMS_KEY,
    FMS_KEY_SHORT,
    HANDSHAKE_SIZE,
    ClientHandshake,
    HandshakeKind,
    ServerHandshake,
    compute_digest,
    digest_offset,
    find_digest,
)


def test_plain_handshake_echoes_c1_and_returns_leftover() -> None:
    c1 = (
        b"\x00\x00\x01\x00"
        + b"\x00" * 4
        + bytes(i % 251 for i in range(HANDSHAKE_SIZE - 8))
    )
    assert len(c1) == HANDSHAKE_SIZE
    hs = ServerHandshake()
    assert hs.receive_data(b"\x03" + c1) == b""
    out = hs.data_to_send()
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    assert out[0] == 3
    assert out[5:9] == b"\x00\x00\x00\x00"
    assert out[1 + HANDSHAKE_SIZE :] == c1
    assert hs.kind is HandshakeKind.PLAIN
    assert not hs.done
    rest = hs.receive_data(out[1 : 1 + HANDSHAKE_SIZE] + b"\x02chunk")
    assert hs.done
    assert rest == b"\x02chunk"


def test_plain_handshake_byte_by_byte() -> None:
    client = ClientHandshake(digest=False)
    data = client.c0c1()
    hs = ServerHandshake()
    for i in range(len(data)):
        assert hs.receive_data(data[i : i + 1]) == b""
    c2 = client.process_server(hs.data_to_send())
    rest = b""
    for i in range(len(c2)):
        rest += hs.receive_data(c2[i : i + 1])
    assert hs.done and rest == b""


@pytest.mark.parametrize("schema", [0, 1])
def test_digest_handshake_verified_by_client(schema: int) -> None:
    client = ClientHandshake(schema=schema)
    hs = ServerHandshake(verify_client_c2=True)
    hs.receive_data(client.c0c1())
    assert hs.kind is (
        HandshakeKind.DIGEST_SCHEMA0 if schema == 0 else HandshakeKind.DIGEST_SCHEMA1
    )
    reply = hs.data_to_send()
    s1 = reply[1 : 1 + HANDSHAKE_SIZE]
    assert (
        s1[4:8] != b"\x00\x00\x00\x00" and s1[5] >= 3
    )  # ffmpeg/librtmp only verify when byte 5 >= 3
    # independent check of the S1 digest position and value
    off = digest_offset(s1, schema)
    assert s1[off : off + 32] == compute_digest(s1, off, FMS_KEY_SHORT)
    assert find_digest(s1, FMS_KEY_SHORT) == (schema, off)
    c2 = client.process_server(
        reply
    )  # verifies S1 digest and S2 signature, raises otherwise
    assert hs.receive_data(c2 + b"x") == b"x"
    assert hs.c2_valid is True


def test_client_detects_bad_server_signature() -> None:
    client = ClientHandshake(schema=1)
    hs = ServerHandshake()
    hs.receive_data(client.c0c1())
    reply = bytearray(hs.data_to_send())
    reply[-1] ^= 1
    with pytest.raises(RemoteProtocolError, match="S2 signature"):
        client.process_server(bytes(reply))
    reply[-1] ^= 1
    reply[100] ^= 0xFF  # inside S1: breaks the server digest (or its offset)
    with pytest.raises(RemoteProtocolError):
        client.process_server(bytes(reply))


def test_s2_signature_is_keyed_by_client_digest() -> None:
    import hashlib
    import hmac

    client = ClientHandshake(schema=0)
    c0c1 = client.c0c1()
    c1 = c0c1[1:]
    off = digest_offset(c1, 0)
    client_digest = c1[off : off + 32]
    hs = ServerHandshake()
    hs.receive_data(c0c1)
    s2 = hs.data_to_send()[1 + HANDSHAKE_SIZE :]
    key = hmac.new(FMS_KEY, client_digest, hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_nonzero_version_without_digest_falls_back_to_plain() -> None:
    c1 = b"\x00\x00\x00\x00\x09\x00\x7c\x02" + bytes(HANDSHAKE_SIZE - 8)
    hs = ServerHandshake()
    hs.receive_data(b"\x03" + c1)
    assert hs.kind is HandshakeKind.PLAIN
    assert hs.data_to_send()[1 + HANDSHAKE_SIZE :] == c1


def test_bad_c2_rejected_when_verifying() -> None:
    client = ClientHandshake(schema=1)
    hs = ServerHandshake(verify_client_c2=True)
    hs.receive_data(client.c0c1())
    hs.data_to_send()
    with pytest.raises(RemoteProtocolError, match="C2"):
        hs.receive_data(bytes(HANDSHAKE_SIZE))


@pytest.mark.parametrize("first", [0, 1, 6, 0x47])
def test_bad_version_byte(first: int) -> None:
    with pytest.raises(RemoteProtocolError):
        ServerHandshake().receive_data(bytes([first]) + b"ET / HTTP/1.1\r\n")


# ---- fuzz: any bytes as C0+C1(+C2): only RemoteProtocolError, never IndexError/struct.error/... ----


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=4), st.booleans())
def test_fuzz_server_handshake(chunks: list[bytes], verify_c2: bool) -> None:
    hs = ServerHandshake(verify_client_c2=verify_c2)
    for c in chunks:
        try:
            hs.receive_data(c)
        except RemoteProtocolError:
            return
        hs.data_to_send()
        if hs.done:
            return


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1536), st.integers(0, 255), st.sampled_from([0, 1]))
def test_fuzz_digest_c1_mutation(pos: int, value: int, schema: int) -> None:
    """A digest C1 with one byte changed: answered (digest or plain fallback) or refused cleanly."""
    data = bytearray(ClientHandshake(schema=schema).c0c1())
    data[pos] = value
    hs = ServerHandshake()
    try:
        hs.receive_data(bytes(data))
    except RemoteProtocolError:
        assert pos == 0  # only a bad version byte is refused
        return
    out = hs.data_to_send()
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
