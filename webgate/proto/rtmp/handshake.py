"""RTMP handshake, server side (sans-IO), plain and Flash Player digest ("FP9") schemes.

Plain: C0 (version 3) + C1 (time, 4 zero bytes, 1528 random) -> S0 + S1 + S2 (echo of C1), then C2.

Digest: C1 bytes 4..7 hold a non-zero client version and C1 carries an HMAC-SHA256 digest keyed with
the first 30 bytes of the Flash Player key, at an offset computed from one of two layouts:

* schema 0: key block at 8..772, digest block at 772..1536; digest offset =
  (sum of bytes 772..775) % 728 + 776;
* schema 1: digest block at 8..772, key block at 772..1536; digest offset =
  (sum of bytes 8..11) % 728 + 12.

The digest is HMAC over C1 without the 32 digest bytes. The server answers S1 with its own digest
(first 36 bytes of the Flash Media Server key, same schema) and S2 = 1504 random bytes followed by
HMAC(HMAC(full FMS key, client digest), those 1504 bytes).

``ClientHandshake`` is the client side of the digest scheme as librtmp / ffmpeg / Flash implement
it; it exists to verify the server in tests.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from enum import Enum

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes(
    [
        0xF0,
        0xEE,
        0xC2,
        0x4A,
        0x80,
        0x68,
        0xBE,
        0xE8,
        0x2E,
        0x00,
        0xD0,
        0xD1,
        0x02,
        0x9E,
        0x7E,
        0x57,
        0x6E,
        0xEC,
        0x5D,
        0x2D,
        0x29,
        0x80,
        0x6F,
        0xAB,
        0x93,
        0xB8,
        0xE6,
        0x36,
        0xCF,
        0xEB,
        0x31,
        0xAE,
    ]
)
#: "Genuine Adobe Flash Player 001" + 32 bytes (62 bytes; the first 30 key C1's digest).
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
#: "Genuine Adobe Flash Media Server 001" + 32 bytes (68 bytes; the first 36 key S1's digest).
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
FP_KEY_SHORT = FP_KEY[:30]
FMS_KEY_SHORT = FMS_KEY[:36]

#: Version we put in S1 bytes 4..7 when answering a digest client (FMS 3.5-like; byte 5 >= 3
#: makes ffmpeg / librtmp verify our digest).
SERVER_VERSION = bytes([0x03, 0x05, 0x01, 0x01])
#: Version a Flash Player 10 style client puts in C1 bytes 4..7.
CLIENT_VERSION = bytes([0x0A, 0x00, 0x2D, 0x02])


class HandshakeKind(Enum):
    PLAIN = "plain"
    DIGEST_SCHEMA0 = "digest0"
    DIGEST_SCHEMA1 = "digest1"


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(packet: bytes, schema: int) -> int:
    """Offset of the 32-byte digest inside a 1536-byte C1/S1 for ``schema`` 0 or 1."""
    base = 772 if schema == 0 else 8
    return (
        (packet[base] + packet[base + 1] + packet[base + 2] + packet[base + 3]) % 728
        + base
        + 4
    )


def compute_digest(packet: bytes, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 over ``packet`` without the 32 bytes at ``offset``."""
    return _hmac(key, packet[:offset] + packet[offset + DIGEST_SIZE :])


def find_digest(packet: bytes, key: bytes) -> tuple[int, int] | None:
    """Return (schema, offset) of a valid digest keyed with ``key``, trying schema 0 then 1."""
    for schema in (0, 1):
        offset = digest_offset(packet, schema)
        expected = compute_digest(packet, offset, key)
        if hmac.compare_digest(expected, packet[offset : offset + DIGEST_SIZE]):
            return schema, offset
    return None


def make_digest_packet(
    time_ms: int,
    version: bytes,
    schema: int,
    key: bytes,
    random_bytes: Callable[[int], bytes],
) -> tuple[bytes, bytes]:
    """Build a 1536-byte C1/S1 with an embedded digest; returns (packet, digest)."""
    body = bytearray(
        struct.pack(">I", time_ms & 0xFFFFFFFF)
        + version
        + random_bytes(HANDSHAKE_SIZE - 8)
    )
    offset = digest_offset(bytes(body), schema)
    digest = compute_digest(bytes(body), offset, key)
    body[offset : offset + DIGEST_SIZE] = digest
    return bytes(body), digest


def make_signature_response(
    peer_digest: bytes, full_key: bytes, random_bytes: Callable[[int], bytes]
) -> bytes:
    """S2 / C2 of the digest scheme: random 1504 bytes + HMAC(HMAC(full_key, peer_digest), random)."""
    rand = random_bytes(HANDSHAKE_SIZE - DIGEST_SIZE)
    sig_key = _hmac(full_key, peer_digest)
    return rand + _hmac(sig_key, rand)


def verify_signature_response(
    packet: bytes, own_digest: bytes, full_key: bytes
) -> bool:
    """Check an S2 / C2 produced by :func:`make_signature_response` against our digest."""
    sig_key = _hmac(full_key, own_digest)
    expected = _hmac(sig_key, packet[: HANDSHAKE_SIZE - DIGEST_SIZE])
    return hmac.compare_digest(expected, packet[HANDSHAKE_SIZE - DIGEST_SIZE :])


class ServerHandshake:
    """Server side of the handshake.

    Feed bytes with :meth:`receive_data`; it returns the bytes left over after C2 (the first chunk
    bytes) once the handshake is complete, else ``b""``. Read replies with :meth:`data_to_send`.
    """

    def __init__(
        self,
        random_bytes: Callable[[int], bytes] = os.urandom,
        server_time_ms: int = 0,
        verify_client_c2: bool = False,
    ) -> None:
        self._random = random_bytes
        self._time = server_time_ms
        self._verify_c2 = verify_client_c2
        self._buf = bytearray()
        self._out = bytearray()
        self._state = 0  # 0: want C0+C1, 1: want C2, 2: done
        self.kind: HandshakeKind | None = None
        self.client_version: bytes = b""
        self._server_digest = b""
        self.c2_valid: bool | None = None

    @property
    def done(self) -> bool:
        return self._state == 2

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> bytes:
        if self._state == 2:
            raise LocalProtocolError("handshake already complete")
        self._buf += data
        if self._state == 0:
            if not self._buf:
                return b""
            if self._buf[0] != RTMP_VERSION:
                if self._buf[0] in (6, 8, 9):
                    raise RemoteProtocolError("encrypted RTMP (RTMPE) is not supported")
                raise RemoteProtocolError(f"unsupported RTMP version {self._buf[0]}")
            if len(self._buf) < 1 + HANDSHAKE_SIZE:
                return b""
            c1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            del self._buf[: 1 + HANDSHAKE_SIZE]
            self._answer_c1(c1)
            self._state = 1
        if self._state == 1:
            if len(self._buf) < HANDSHAKE_SIZE:
                return b""
            c2 = bytes(self._buf[:HANDSHAKE_SIZE])
            del self._buf[:HANDSHAKE_SIZE]
            if self.kind is not HandshakeKind.PLAIN:
                self.c2_valid = verify_signature_response(
                    c2, self._server_digest, FP_KEY
                )
                if self._verify_c2 and not self.c2_valid:
                    raise RemoteProtocolError("C2 signature mismatch")
            self._state = 2
            rest = bytes(self._buf)
            self._buf.clear()
            return rest
        return b""

    def _answer_c1(self, c1: bytes) -> None:
        self.client_version = c1[4:8]
        found = None
        if c1[4:8] != b"\x00\x00\x00\x00":
            found = find_digest(c1, FP_KEY_SHORT)
        if found is None:
            self.kind = HandshakeKind.PLAIN
            s1 = (
                struct.pack(">I", self._time & 0xFFFFFFFF)
                + b"\x00\x00\x00\x00"
                + self._random(HANDSHAKE_SIZE - 8)
            )
            s2 = c1
        else:
            schema, offset = found
            self.kind = (
                HandshakeKind.DIGEST_SCHEMA0
                if schema == 0
                else HandshakeKind.DIGEST_SCHEMA1
            )
            client_digest = c1[offset : offset + DIGEST_SIZE]
            s1, self._server_digest = make_digest_packet(
                self._time, SERVER_VERSION, schema, FMS_KEY_SHORT, self._random
            )
            s2 = make_signature_response(client_digest, FMS_KEY, self._random)
        self._out += bytes([RTMP_VERSION]) + s1 + s2


class ClientHandshake:
    """Client side of the digest handshake (as Flash Player / librtmp / ffmpeg do it). For tests."""

    def __init__(
        self,
        schema: int = 1,
        digest: bool = True,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if schema not in (0, 1):
            raise LocalProtocolError("schema must be 0 or 1")
        self.schema = schema
        self._digest_mode = digest
        self._random = random_bytes
        self._c1 = b""
        self._client_digest = b""
        self.server_digest = b""

    def c0c1(self) -> bytes:
        if self._digest_mode:
            self._c1, self._client_digest = make_digest_packet(
                0, CLIENT_VERSION, self.schema, FP_KEY_SHORT, self._random
            )
        else:
            self._c1 = b"\x00" * 8 + self._random(HANDSHAKE_SIZE - 8)
        return bytes([RTMP_VERSION]) + self._c1

    def process_server(self, s0s1s2: bytes) -> bytes:
        """Verify S0/S1/S2 (3073 bytes) and return C2. Raises RemoteProtocolError on mismatch."""
        if len(s0s1s2) != 1 + 2 * HANDSHAKE_SIZE:
            raise RemoteProtocolError("S0+S1+S2 must be 3073 bytes")
        if s0s1s2[0] != RTMP_VERSION:
            raise RemoteProtocolError("bad S0 version")
        s1 = s0s1s2[1 : 1 + HANDSHAKE_SIZE]
        s2 = s0s1s2[1 + HANDSHAKE_SIZE :]
        if not self._digest_mode:
            if s2 != self._c1:
                raise RemoteProtocolError("S2 does not echo C1")
            return s1
        found = find_digest(s1, FMS_KEY_SHORT)
        if found is None:
            raise RemoteProtocolError("server digest in S1 does not validate")
        schema, offset = found
        if schema != self.schema:
            raise RemoteProtocolError("server answered with the other schema")
        self.server_digest = s1[offset : offset + DIGEST_SIZE]
        if not verify_signature_response(s2, self._client_digest, FMS_KEY):
            raise RemoteProtocolError("S2 signature mismatch")
        return make_signature_response(self.server_digest, FP_KEY, self._random)
