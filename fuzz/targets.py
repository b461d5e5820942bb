"""Fuzz targets: each drives a sans-IO core (or the edge function an adapter calls) with one input
and raises :class:`ContractViolation` (or lets an unexpected exception escape) when the
documented contract does not hold.

A target is ``fn(data: bytes) -> None``. Only the documented error types may come out of the
code under test; the target catches exactly those. Anything else escaping is a crash. Where a
core buffers input, the target also checks the buffer stays within its bound.

Several targets read the first byte of the input as a "mode" (which entry point, or how a
stream is cut into reads); the seed corpus (fuzz/corpus/TARGET/) follows the same layout.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from webgate.proto.errors import LocalProtocolError, RemoteProtocolError


class ContractViolation(AssertionError):
    """The code under test broke its documented contract (not one of its documented errors)."""


def _split(data: bytes, pattern: int) -> list[bytes]:
    """Cut ``data`` into reads of sizes derived from ``pattern`` (0: one read)."""
    if pattern == 0 or not data:
        return [data]
    sizes = [1 + (pattern * (i + 7) * 2654435761 >> 8) % max(1, 1 + pattern * 3) for i in range(16)]
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i : i + n])
        i += n
        k += 1
    return out


# ---------------------------------------------------------------------------------------------
# SIP: one datagram (UDP) or a stream (TCP framing) through parse → accessors → user agent

def _sip_ua() -> Any:
    from webgate.proto.sip.useragent import LocalEndpoint, UAConfig, UserAgent

    return UserAgent(UAConfig({"udp": LocalEndpoint("udp", "127.0.0.1", 5060), "tcp": LocalEndpoint("tcp", "127.0.0.1", 5060)}))


def _sip_message(msg: Any, transport: str, ua: Any) -> None:
    from webgate.proto.sip.message import SipRequest, stateless_error_response

    for accessor in ("call_id", "cseq", "from_", "to", "vias", "top_via", "contacts", "record_routes", "content_type"):
        try:
            getattr(msg, accessor)
        except RemoteProtocolError:
            pass
    raw = msg.serialize()  # the adapter serializes a parsed request for its stateless 400
    if not isinstance(raw, bytes):
        raise ContractViolation("serialize() did not return bytes")
    try:
        msg.validate_basic()
    except RemoteProtocolError as e:
        if isinstance(msg, SipRequest) and msg.method != "ACK":
            stateless_error_response(raw, e.message)
        return
    try:
        ua.receive(msg, (transport, "127.0.0.2", 5062), 1000.0)
        ua.outgoing()
        ua.handle_timers(1064.0)
        ua.outgoing()
    except (RemoteProtocolError, LocalProtocolError):
        pass  # the adapter logs these and drops the message


def sip(data: bytes) -> None:
    from webgate.proto.sip.message import (
        StreamFramer,
        parse_message,
        stateless_error_response,
    )

    if not data:
        return
    mode, body = data[0], data[1:]
    if mode & 1 == 0:
        try:
            msg = parse_message(body, 65535, datagram=True)
        except RemoteProtocolError as e:
            reply = stateless_error_response(body, e.message, 513 if e.status_hint == 513 else 400)
            if reply is not None and not isinstance(reply, bytes):
                raise ContractViolation("stateless_error_response returned a non-bytes value") from None
            return
        _sip_message(msg, "udp", _sip_ua())
        return
    framer = StreamFramer(4096)
    ua = _sip_ua()  # one connection's messages go to one user agent (INVITE, then CANCEL, ACK, BYE...)
    for piece in _split(body, mode >> 1):
        for item in framer.feed(piece):
            if isinstance(item, RemoteProtocolError):
                continue
            _sip_message(item, "tcp", ua)
        if framer.pending > framer.max_size + len(piece):
            raise ContractViolation(f"SIP framer holds {framer.pending} bytes (max_size {framer.max_size})")
        if framer.broken:
            break


# ---------------------------------------------------------------------------------------------
# SDP: parse, then offer/answer both ways


def sdp(data: bytes) -> None:
    from webgate.proto.sdp import (
        Codec,
        apply_answer,
        build_offer,
        negotiate_answer,
        parse_sdp,
    )

    try:
        desc = parse_sdp(data)
    except RemoteProtocolError:
        return
    out = desc.serialize()
    if not isinstance(out, bytes):
        raise ContractViolation("serialize() did not return bytes")
    local = [Codec("PCMU", 8000), Codec("PCMA", 8000), Codec("opus", 48000, 2), Codec("telephone-event", 8000)]
    try:
        negotiate_answer(desc, local, "127.0.0.1", 40000)
    except RemoteProtocolError:
        pass
    offer = build_offer(local, "127.0.0.1", 40000, 1)
    try:
        apply_answer(offer, desc)
    except RemoteProtocolError:
        pass


# ---------------------------------------------------------------------------------------------
# RTP / RTCP / RFC 4733: the parsers, then the SIP-side stream's receive path


def _stream() -> Any:
    from webgate.media.stream import RtpAudioStream
    from webgate.proto.sdp import Codec, NegotiatedMedia

    s = RtpAudioStream(lambda d, a: None, lambda d, a: None)
    s.configure(NegotiatedMedia("127.0.0.1", 40000, "127.0.0.1", 40001, Codec("PCMU", 8000, payload_type=0), 101, 20, "sendrecv", False,
                                telephone_event_clock_rate=8000))
    s.on_dtmf = lambda digit, ms: None
    return s


def _rtp_parsers(packet: bytes) -> None:
    from webgate.proto import rtp

    try:
        p = rtp.RtpPacket.parse(packet)
    except RemoteProtocolError:
        p = None
    lean = rtp.parse_payload(packet)
    if lean is not None and p is not None and lean[4] != p.payload:
        raise ContractViolation("parse_payload and RtpPacket.parse disagree on the payload")
    if p is not None:
        # the fast constructor (RtpPacket._fields) makes what the dataclass makes, and an unpadded
        # packet serializes back to its own bytes (serialize's one-pack path included)
        if p != rtp.RtpPacket(**vars(p)) or vars(p) != vars(rtp.RtpPacket(**vars(p))):
            raise ContractViolation("RtpPacket.parse built another packet than its dataclass would")
        if not p.padding_size and p.serialize() != bytes(packet):
            raise ContractViolation("RtpPacket.parse -> serialize does not give the packet back")
    try:
        rtp.parse_rtcp(packet)
    except RemoteProtocolError:
        pass
    try:
        rtp.TelephoneEvent.parse(packet)
    except RemoteProtocolError:
        pass


def rtp(data: bytes) -> None:
    if not data:
        return
    n = 1 + data[0] % 4
    body = data[1:]
    step = max(1, len(body) // n)
    packets = [body[i : i + step] for i in range(0, len(body), step)][:n] or [b""]
    stream = _stream()
    now = 100.0
    for p in packets:
        _rtp_parsers(p)
        stream.datagram_received(p, ("127.0.0.1", 40000), now)
        stream.rtcp_received(p, ("127.0.0.1", 40001), now)
        now += 0.02
        stream.tick(now)
    stream.tick(now + 1.0)


# ---------------------------------------------------------------------------------------------
# STUN-shaped datagrams on an RTP port: the SIP-side stream and the WebRTC direct-audio demux


_STUN_COOKIE = b"\x21\x12\xa4\x42"


def _stun_shape(data: bytes) -> bytes:
    if not data:
        return b""
    mode = data[0]
    rest = data[1:]
    if mode & 3 == 0:
        return rest  # raw junk
    head = rest[:2].ljust(2, b"\x00")
    msg_type = bytes([head[0] & 0x3F, head[1]])
    tid = rest[2:14].ljust(12, b"\x00")
    attrs = rest[14:]
    length = len(attrs) if mode & 4 == 0 else (mode * 37) & 0xFFFF
    return msg_type + length.to_bytes(2, "big") + _STUN_COOKIE + tid + attrs


class _FakeSrtp:
    def protect(self, data: bytes) -> bytes:
        return data

    def unprotect(self, data: bytes) -> bytes:
        return data


def _direct_audio(on_rtp: Callable[..., None], passed: list[bytes]) -> Any:
    from webgate.adapters.webrtc_direct import DirectAudio

    class _Protocol(SimpleNamespace):  # weak-referenceable and hashable by identity, like aioice's StunProtocol
        __hash__ = object.__hash__      # (SrtpTap keys on it)
        __eq__ = object.__eq__

    proto = _Protocol(transport=SimpleNamespace(sendto=lambda d, a: None))
    proto.datagram_received = lambda d, a: passed.append(d)
    pair = SimpleNamespace(protocol=proto, remote_addr=("127.0.0.1", 50000))
    dtls = SimpleNamespace(transport=SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair})),
                           _tx_srtp=_FakeSrtp(), _rx_srtp=_FakeSrtp())
    sender = SimpleNamespace(transport=dtls, _ssrc=1234, _RTCRtpSender__packet_count=0)
    d = DirectAudio(sender, {0, 8, 111}, on_rtp)
    if not d.start():
        raise ContractViolation("DirectAudio did not start on the fake peer connection")
    return d, proto


def stun(data: bytes) -> None:
    packet = _stun_shape(data)
    stream = _stream()
    stream.datagram_received(packet, ("127.0.0.1", 40000), 100.0)
    stream.rtcp_received(packet, ("127.0.0.1", 40001), 100.0)
    stream.tick(100.1)
    got: list[tuple[Any, ...]] = []
    passed: list[bytes] = []
    direct, proto = _direct_audio(lambda *a: got.append(a), passed)
    proto.datagram_received(packet, ("127.0.0.1", 50000))
    if packet[:1] and packet[0] < 128 and got:
        raise ContractViolation("a STUN/DTLS-range datagram was taken as audio RTP")
    if len(got) + len(passed) + direct.srtp_errors + (1 if packet[:1] and 127 < packet[0] < 192 else 0) == 0:
        raise ContractViolation("a datagram was neither handled nor passed on")


# ---------------------------------------------------------------------------------------------
# The native relay's sans-IO core (webgate/native/relay.c wg_relay_packet), SRTP off and on

_RELAY: dict[str, Any] = {}
_RELAY_CAP = 8192 + 256
_RELAY_KEY = bytes(range(30))
_PYLIBSRTP_MAX = 1500


def _relay_engine() -> Any:
    if not _RELAY:
        from webgate.adapters.native_reader import sockaddr
        from webgate.native._relay import ffi, lib

        _RELAY.update(ffi=ffi, lib=lib, e=ffi.gc(lib.wg_engine_new(), lib.wg_engine_free),
                      buf=ffi.new("unsigned char[]", _RELAY_CAP), src=sockaddr(("127.0.0.1", 40000)))
    return _RELAY


def relay(data: bytes) -> None:
    """First byte: bit 0 SRTP in, bit 1 SRTP out, bit 2 the datagrams are SRTP-protected with the
    rule's key first (past the authentication), bit 3 another source; second byte: the relayed
    payload type; bits 4-5: 1-4 datagrams (the rest cut evenly, like ``rtp``) through one fresh rule."""
    if len(data) < 2:
        return
    from pylibsrtp import Policy, Session

    from webgate.adapters.native_reader import set_srtp

    r = _relay_engine()
    ffi, lib, buf = r["ffi"], r["lib"], r["buf"]
    mode, pt = data[0], data[1] & 0x7F

    def session(outbound: bool) -> Any:
        policy = Policy(key=_RELAY_KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound else Policy.SSRC_ANY_INBOUND)
        policy.allow_repeat_tx = True
        return Session(policy)

    spec = ffi.new("wg_rule_spec *")
    spec.in_fd, spec.in_pt, spec.out_pt, spec.out_ssrc, spec.clock_rate, spec.out_fd = 7, pt, 8, 0xABCD, 8000, -1
    spec.next_seq, spec.next_ts, spec.src_len = 1, 2, len(r["src"])
    ffi.memmove(spec.src, r["src"], len(r["src"]))
    rx = session(False) if mode & 1 else None
    tx = session(True) if mode & 2 else None
    peer_tx, peer_rx = session(True), session(False)
    set_srtp(spec, rx, tx)
    if lib.wg_rule_set(r["e"], spec) != 0:
        raise ContractViolation("a valid rule was refused")
    src = r["src"] if mode & 8 == 0 else r["src"][:2] + b"\x00\x01" + r["src"][4:]
    body, count, verified = data[2:], 1 + (mode >> 4) % 4, False
    step = max(1, len(body) // count)
    for packet in [body[i : i + step] for i in range(0, len(body), step)][:count] or [b""]:
        if mode & 4 and len(packet) >= 12:
            with contextlib.suppress(Exception):  # libsrtp refuses some headers (pylibsrtp.Error): sent as is
                packet = peer_tx.protect(packet)
        n = min(len(packet), _RELAY_CAP - 148)
        ffi.memmove(buf, packet, n)
        res = lib.wg_relay_packet(r["e"], 7, src, len(src), buf, n, _RELAY_CAP, 1.0)
        if res < -2 or res > _RELAY_CAP:
            raise ContractViolation(f"wg_relay_packet returned {res}")
        if res == -1 and ffi.buffer(buf, n)[:] != packet[:n]:
            raise ContractViolation("a datagram handed back to Python was changed")
        if res >= 0:
            out = ffi.buffer(buf, res)[:]
            if tx is not None and res <= _PYLIBSRTP_MAX and not verified:  # (pylibsrtp's buffer is smaller)
                # the first one only: later ones may repeat or jump back (as their inputs did), and
                # the peer's replay check would refuse them, as a browser does
                out = peer_rx.unprotect(out)  # pylibsrtp.Error here: the relay's SRTP is broken
                verified = True
            elif tx is not None:
                out = out[:12]
            if res < 12 or out[0] != 0x80 or out[1] & 0x7F != 8 or out[8:12] != b"\x00\x00\xab\xcd":
                raise ContractViolation(f"a relayed packet's header is wrong: {out[:12].hex()}")
    if lib.wg_rule_clear(r["e"], 7, ffi.NULL) != 0:
        raise ContractViolation("the rule vanished")


# ---------------------------------------------------------------------------------------------
# RTMP: handshake + chunk stream + commands, the server core answering like the adapter does

_RTMP_PRELUDE: tuple[bytes, bytes] | None = None


def _rtmp_config() -> Any:
    from webgate.proto.rtmp.server import RtmpLimits, RtmpServerConfig

    return RtmpServerConfig(limits=RtmpLimits(max_message_length=256 * 1024, max_buffered_bytes=512 * 1024),
                            random_bytes=lambda n: bytes(n))


def _rtmp_prelude() -> tuple[bytes, bytes]:
    """C0+C1 and C2 of a digest handshake (deterministic: the server's random bytes are zeros)."""
    global _RTMP_PRELUDE
    if _RTMP_PRELUDE is None:
        from webgate.proto.rtmp.handshake import ClientHandshake
        from webgate.proto.rtmp.server import RtmpServerConnection

        hs = ClientHandshake(random_bytes=lambda n: bytes((i * 7) & 0xFF for i in range(n)))
        c0c1 = hs.c0c1()
        conn = RtmpServerConnection(_rtmp_config())
        conn.receive_data(c0c1, 0.0)
        c2 = hs.process_server(conn.data_to_send())
        _RTMP_PRELUDE = (c0c1, c2)
    return _RTMP_PRELUDE


def rtmp(data: bytes) -> None:
    from webgate.proto.rtmp import server as s

    if not data:
        return
    mode, body = data[0], data[1:]
    conn = s.RtmpServerConnection(_rtmp_config())
    lim = conn.config.limits
    if mode & 1 == 0:
        c0c1, c2 = _rtmp_prelude()
        conn.receive_data(c0c1, 0.0)
        conn.receive_data(c2, 0.0)
        conn.data_to_send()
    now = 1.0
    for piece in _split(body, mode >> 1):
        events = conn.receive_data(piece, now)
        now += 0.01
        for ev in events:
            try:
                if isinstance(ev, s.ConnectRequested):
                    conn.accept_connect()
                elif isinstance(ev, s.PublishRequested):
                    conn.accept_publish(ev.stream_id)
                elif isinstance(ev, s.PlayRequested):
                    conn.accept_play(ev.stream_id, metadata={"audiocodecid": 7})
                    conn.send_audio(ev.stream_id, 0, b"\x72" + bytes(160))
                elif isinstance(ev, s.CommandReceived):
                    conn.send_result(ev.transaction_id, None)
            except LocalProtocolError:
                pass  # e.g. an answer the connection's state no longer allows (the adapter's bug, not input)
        conn.data_to_send()
        if conn.pending_input > lim.max_buffered_bytes + len(piece):
            raise ContractViolation(f"RTMP core buffers {conn.pending_input} bytes (limit {lim.max_buffered_bytes})")
        if conn.closed:
            if conn.receive_data(b"\x03" * 8, now):
                raise ContractViolation("events after the connection was closed")
            break


def amf(data: bytes) -> None:
    from webgate.proto.rtmp import amf as a
    from webgate.proto.rtmp.chunk import (
        MSG_COMMAND_AMF0,
        MSG_COMMAND_AMF3,
        MSG_DATA_AMF0,
        MSG_DATA_AMF3,
    )

    if not data:
        return
    mode, body = data[0] % 6, data[1:]
    try:
        if mode == 0:
            a.decode_amf0(body)
        elif mode == 1:
            a.decode_amf3(body)
        else:
            type_id = (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3, MSG_DATA_AMF0, MSG_DATA_AMF3)[mode - 2]
            if mode < 4:
                a.decode_command(type_id, body)
            else:
                a.decode_message_values(type_id, body)
    except RemoteProtocolError:
        pass


# ---------------------------------------------------------------------------------------------
# FLV tags (RTMP audio/video message bodies) and FLV files


def flv(data: bytes) -> None:
    from webgate.proto import flv as f

    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    try:
        if mode == 0:
            f.parse_audio_tag(body)
            f.audio_codec_of(body, body[-2:] or None)
        elif mode == 1:
            f.parse_video_tag(body)
        elif mode == 2:
            _, tags = f.read_flv(body)
            for _ in tags:
                pass
        else:
            f.parse_audio_specific_config(body)
    except RemoteProtocolError:
        pass


# ---------------------------------------------------------------------------------------------
# WebSocket signalling: one JSON text message through SignallingProtocol.textMessageReceived

JWT_KEY = "fuzz-key-0123456789abcdef0123456789"
JWT_NOW = 1_800_000_000.0


class _WsManager:
    def __init__(self) -> None:
        from webgate.config import TokensConfig

        self.tokens = TokensConfig(key=JWT_KEY)
        self.web_users = SimpleNamespace(register=lambda user, ep: None, unregister=lambda user, ep: None)

    def place_call(self, *a: Any, **k: Any) -> Any:  # pragma: no cover - admit refuses first
        raise ContractViolation("place_call reached without admission")

    def admit(self, *a: Any, **k: Any) -> Any:
        from webgate.calls.errors import CallRefused

        raise CallRefused("forbidden", "fuzzing: no calls", 403)

    def wall_clock(self) -> float:
        return JWT_NOW

    def hold(self, call: Any, on: bool, done: Callable[[bool, int | None], None]) -> None:
        done(False, None)


class _WsTransport:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.lost = False

    def sendTextMessage(self, text: str) -> None:
        self.sent.append(text)

    def loseConnection(self, code: int = 1000) -> None:
        self.lost = True


_WS_FACTORY: Any = None


def ws(data: bytes) -> None:
    global _WS_FACTORY
    from twisted.internet.task import Clock

    from webgate.web.ws import SignallingFactory, SignallingProtocol

    if _WS_FACTORY is None:
        from webgate.legs.webrtc import WebRtcSettings

        _WS_FACTORY = SignallingFactory(_WsManager(), WebRtcSettings(), Clock())
    factory = _WS_FACTORY
    proto = SignallingProtocol(factory, "127.0.0.1:5000", SimpleNamespace())
    transport = _WsTransport()
    proto.transport = transport  # type: ignore[assignment]
    text = data.decode("utf-8", "replace")  # twisted.web.websocket delivers decoded text
    for part in text.split("\x00\x00")[:4]:  # several messages on one connection
        proto.textMessageReceived(part)
    proto.connectionLost(SimpleNamespace())  # type: ignore[arg-type]
    for c in factory.reactor.getDelayedCalls():
        c.cancel()
    for raw in transport.sent:
        msg = json.loads(raw)
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ContractViolation(f"reply is not a typed object: {raw[:200]}")
        if msg.get("code") == "internal_error":
            raise ContractViolation(f"a message raised inside its handler (internal_error): {text[:200]!r}")


# ---------------------------------------------------------------------------------------------
# TOML config: the file loader


_CONFIG_PATH: str | None = None


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:  # a tmp cleaner got there first
        pass


def config(data: bytes) -> None:
    global _CONFIG_PATH
    from webgate.config import ConfigError, load_config

    if _CONFIG_PATH is None:
        fd, _CONFIG_PATH = tempfile.mkstemp(prefix="webgate-fuzz-", suffix=".toml")
        os.close(fd)
        atexit.register(_remove_quietly, _CONFIG_PATH)
    with open(_CONFIG_PATH, "wb") as fh:
        fh.write(data)
    try:
        load_config(_CONFIG_PATH)
    except ConfigError:
        pass


# ---------------------------------------------------------------------------------------------
# JWT: verify_token on a fuzzed token (mode 0), or on a validly signed token whose payload is
# the fuzzed bytes (mode 1), so the claim checks see arbitrary JSON


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_JWT_HEADER = _b64(b'{"alg":"HS256","typ":"JWT"}')


def jwt(data: bytes) -> None:
    from webgate.config import TokensConfig
    from webgate.security.tokens import TokenError, verify_token

    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    if mode == 0:
        token: Any = body.decode("utf-8", "replace")
    else:
        head = _JWT_HEADER if mode == 1 else _b64(body[:40])
        signing = f"{head}.{_b64(body if mode == 1 else body[40:])}"
        sig = hmac.new(JWT_KEY.encode(), signing.encode(), hashlib.sha256).digest()
        token = f"{signing}.{_b64(sig)}"
    cfg = TokensConfig(key=JWT_KEY, issuer="" if data[0] & 8 == 0 else "iss", audience="" if data[0] & 16 == 0 else "aud")
    try:
        verify_token(token, cfg, now=JWT_NOW)
    except TokenError:
        pass


def preload() -> None:
    """Import every module the targets use (atheris instruments modules as they are imported)."""
    import importlib

    for m in ("webgate.proto.sip.message", "webgate.proto.sip.useragent", "webgate.proto.sip.transaction",
              "webgate.proto.sip.dialog", "webgate.proto.sip.auth", "webgate.proto.sdp", "webgate.proto.rtp",
              "webgate.proto.flv", "webgate.proto.rtmp.server", "webgate.proto.rtmp.chunk", "webgate.proto.rtmp.amf",
              "webgate.proto.rtmp.handshake", "webgate.media.stream", "webgate.adapters.webrtc_direct", "webgate.web.ws",
              "webgate.web.handlers",
              "webgate.legs.webrtc", "webgate.adapters.webrtc", "webgate.adapters.native_reader", "webgate.config", "webgate.security.tokens", "webgate.calls.users", "jwt", "tomllib",
              "pyamf.amf0", "pyamf.amf3"):
        importlib.import_module(m)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sip": sip,
    "sdp": sdp,
    "rtp": rtp,
    "stun": stun,
    "rtmp": rtmp,
    "amf": amf,
    "flv": flv,
    "ws": ws,
    "config": config,
    "jwt": jwt,
    "relay": relay,
}

#: largest input per target handed to libFuzzer (-max_len)
MAX_LEN: dict[str, int] = {"rtmp": 65536, "sip": 8192, "sdp": 8192, "config": 8192, "ws": 16384, "flv": 16384}
