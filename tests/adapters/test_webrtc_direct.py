"""Direct audio (webgate/adapters/webrtc_direct.py): once DTLS is up the leg sends and receives the
audio RTP itself. An aiortc client calls the built-in echo on each media path, with direct audio on
and off; the tone is measured where the client decodes it. Bytes the leg's hook cannot
authenticate are dropped without harming the call."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
import pytest_twisted

from tests.adapters.webrtc_client import Browser, Gateway, close_all, complete_call, connect
from tests.calls.gw import sleep, wait_for
from webgate.legs.webrtc import WebRtcSettings
from webgate.adapters import media_loop
from webgate.adapters.webrtc_direct import DirectAudio
from webgate.proto.rtp import parse_payload
from webgate.calls import dialplan


def _rtp(pt: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, 7, 1000, 0x1234) + payload


@pytest.mark.parametrize(
    ("codecs", "direct", "path", "sip_codecs", "media_io"),
    [
        (None, True, "packet", None, "native"),  # G.711 relayed in C (the native reader's rules), both ways
        (None, True, "packet", None, "loop"),  # G.711 relayed, both ways direct, one loop reader
        (None, True, "packet", None, "twisted"),  # the same on Twisted's/asyncio's per-socket readers
        (None, True, "packet", None, "loop:5"),  # the loop reader on a 5 ms timer ([rtp] read_interval_ms)
        (None, False, "packet", None, "loop"),  # the same on aiortc's own media path
        (["G722"], True, "frame", None, "loop"),  # transcoded: decoded and encoded in the leg, sent direct
        (["opus"], True, "packet", None, "loop"),
        (["opus"], True, "packet", None, "twisted"),
        (["opus"], True, "frame", ["PCMU"], "loop"),  # Opus <-> G.711: Opus encoded from 8 kHz as it is
    ],
)
@pytest_twisted.ensureDeferred
async def test_echo_through_direct_audio(codecs: list[str] | None, direct: bool, path: str, sip_codecs: list[str] | None,
                                         media_io: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if sip_codecs:  # what the gateway offers the built-in echo (which answers in offer order)
        monkeypatch.setattr(dialplan, "BUILTIN_ROUTE_CODECS", tuple(sip_codecs))
    media_io, _, interval = media_io.partition(":")
    gw = Gateway({"rtp": {"media_io": media_io, "read_interval_ms": int(interval or 0)}},
                 settings=WebRtcSettings(direct_audio=direct, allow_private_candidates=True))
    reader = gw.svc.rtp_pool.reader
    assert (reader is not None) == (media_io != "twisted")
    assert (reader is not None and hasattr(reader, "set_rule")) == (media_io == "native")
    assert reader is None or reader.interval == int(interval or 0) / 1000
    browser = Browser(tone_hz=700.0, codecs=codecs)
    ws = None
    try:
        ws = await connect(gw.url)
        await complete_call(ws, browser, {"type": "call", "destination": "echo"})
        (call,) = list(gw.svc.registry)
        leg = call.leg
        measured, level = await browser.heard()
        print(f"\n[direct={direct} {call.codec} {call.media_path}] echo measured {measured:.1f} Hz, {level:.1f} dBFS")
        assert abs(measured - 700.0) < 15 and level > -30
        assert call.media_path == path
        offload = getattr(leg._direct, "offload", None)
        if media_io == "native" and direct and path == "packet":
            # both directions carried in C: the counters Python reads still move
            assert offload is not None and offload.engaged == (True, True), offload and offload.engaged
            relayed = offload.relayed
            await sleep(1.0)
            assert offload.relayed > relayed + 50 and reader.relayed > 100
            assert call.stream.stats.packets_received > 50 and call.stream.stats.packets_sent > 50
            assert call.stream.rx_stats is not None and call.stream.rx_stats.received > 50
        else:
            assert offload is None
        sender = next(t.sender for t in leg.pc.getTransceivers() if t.sender.track is leg.out_track)
        if direct:
            d = leg._direct
            assert d is not None and d.active and leg.out_track.direct
            assert d.packets_received > 50 and d.packets_sent > 50 and d.srtp_errors == 0
            # aiortc's sender sent no audio of its own: its report counters are ours
            assert sender._RTCRtpSender__packet_count == d.packets_sent
            assert leg.stats.frames_from_browser > 50 and leg.stats.frames_to_browser > 50
            if path == "frame":
                assert leg._rx_decoder is not None and leg._tx_encoder is not None and leg.stats.packets_relayed == 0
                if sip_codecs == ["PCMU"]:
                    assert call.codec == "PCMU" and leg._tx_encoder.info.sample_rate == 8000 and leg._tx_step == 960
            else:
                assert leg.stats.packets_relayed > 50
            # bytes that look like the call's audio but fail SRTP authentication: dropped, counted
            proto = leg.pc.getTransceivers()[0].sender.transport.transport._connection._nominated[1].protocol
            ice_sock = proto.transport._sock
            # [rtp] media_io: the ICE socket is read by the loop reader, or by asyncio's own reader
            assert (reader is not None and ice_sock in reader._fds) == (media_io != "twisted")
            assert (ice_sock.fileno() in proto.transport._loop._selector.get_map()) == (media_io == "twisted")
            assert (d._sendto == proto.transport.sendto) == (media_io == "twisted")  # loop: the socket's own sendto
            before = d.packets_received
            for junk in (_rtp(leg._audio_pt, b"\x00" * 170), _rtp(leg._audio_pt, b"\x01"), b"\x80" + bytes([leg._audio_pt]) + b"\xff" * 40):
                proto.datagram_received(junk, ("127.0.0.1", 9))
            assert d.srtp_errors == 3
            await sleep(0.5)
            assert d.packets_received > before and not call.ended
            measured, _ = await browser.heard()
            assert abs(measured - 700.0) < 15
        else:
            assert leg._direct is None and not leg.out_track.direct
            assert sender._RTCRtpSender__packet_count > 50
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        if direct:
            assert "datagram_received" not in vars(proto)  # the hook is gone with the call
            assert reader is None or ice_sock not in reader._fds
    finally:
        await close_all(gw, browser, ws)
        media_loop.set_default_mode("loop", 0)


class _Proto:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []
        self.passed: list[bytes] = []
        self.transport = SimpleNamespace(sendto=lambda data, addr: self.sent.append((data, addr)))

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.passed.append(data)


def _unprotect(data: bytes) -> bytes:
    if data[-1:] != b"T":
        raise ValueError("bad tag")
    return data[:-1]


def _fake_sender(proto: _Proto, sent_before: int = 0) -> SimpleNamespace:
    pair = SimpleNamespace(protocol=proto, remote_addr=("127.0.0.1", 9))
    dtls = SimpleNamespace(
        transport=SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair})),
        _tx_srtp=SimpleNamespace(protect=lambda b: b + b"T"),  # SRTP: the header stays clear, a tag follows
        _rx_srtp=SimpleNamespace(unprotect=_unprotect),
    )
    sender = SimpleNamespace(transport=dtls, _ssrc=0xABCDEF)
    setattr(sender, "_RTCRtpSender__packet_count", sent_before)
    return sender


def test_direct_audio_sends_numbered_packets_and_restores_the_socket() -> None:
    proto = _Proto()
    got: list[tuple[int, int, int, bool, bytes]] = []
    sender = _fake_sender(proto)
    d = DirectAudio(sender, {0, 101}, lambda *a: got.append(a))
    assert d.start()
    for _ in range(3):
        d.send(0, b"\xff" * 160, 160)
    pkts = [parse_payload(data[:-1]) for data, addr in proto.sent]
    assert [addr for _, addr in proto.sent] == [("127.0.0.1", 9)] * 3 and all(data[-1:] == b"T" for data, _ in proto.sent)
    assert [p[0] for p in pkts] == [0, 0, 0]
    assert [(p[1] - pkts[0][1]) % 65536 for p in pkts] == [0, 1, 2]
    assert [(p[2] - pkts[0][2]) % 2**32 for p in pkts] == [0, 160, 320]
    assert proto.sent[0][0][8:12] == (0xABCDEF).to_bytes(4, "big")
    assert getattr(sender, "_RTCRtpSender__packet_count") == 3 and getattr(sender, "_RTCRtpSender__octet_count") == 480
    # the socket: the call's audio (PT 0 / 101) comes here unprotected; RTCP, other PTs, STUN go on
    proto.datagram_received(_rtp(0, b"abc") + b"T", ("127.0.0.1", 9))
    proto.datagram_received(_rtp(0, b"forged"), ("127.0.0.1", 9))  # no tag: fails "authentication"
    proto.datagram_received(_rtp(96, b"video"), ("127.0.0.1", 9))
    proto.datagram_received(b"\x80\xc8" + b"\x00" * 26, ("127.0.0.1", 9))  # an RTCP sender report
    proto.datagram_received(b"\x00\x01\x00\x00" + b"\x00" * 16, ("127.0.0.1", 9))  # STUN
    assert got == [(0, 7, 1000, False, b"abc")] and d.srtp_errors == 1
    assert len(proto.passed) == 3
    d.stop()
    assert "datagram_received" not in vars(proto) and not d.active
    d.send(0, b"x", 160)  # after stop: nothing sent, nothing raised
    assert len(proto.sent) == 3


def test_direct_audio_stays_off_when_aiortc_already_sent_or_internals_differ() -> None:
    proto = _Proto()
    assert not DirectAudio(_fake_sender(proto, sent_before=5), {0}, lambda *a: None).start()
    assert not DirectAudio(SimpleNamespace(transport=None, _ssrc=1), {0}, lambda *a: None).start()
    assert "datagram_received" not in vars(proto)


def test_a_failing_packet_handler_is_counted_not_raised() -> None:
    proto = _Proto()

    def boom(*_: object) -> None:
        raise ValueError("handler bug")

    d = DirectAudio(_fake_sender(proto), {0}, boom)
    assert d.start()
    for _ in range(3):
        proto.datagram_received(_rtp(0, b"abc") + b"T", ("127.0.0.1", 9))
    assert d.handler_errors == 3 and d.packets_received == 3

