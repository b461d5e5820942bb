"""The WebRTC call leg (webgate/legs/webrtc.py) without aiortc: a stand-in peer connection, a
stand-in call and task.Clock. The packet and frame paths both ways, DTMF from the browser, the
ICE timeout, the inbound-media watchdog, the switch to direct audio, and the pacing of the audio
toward the browser."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from twisted.internet.task import Clock

from webgate.calls.call import CallState
from webgate.legs.webrtc import AnswerInfo, WebRtcCallLeg, WebRtcSettings
from webgate.legs.webrtc_media import EncodedAudio, SipAudioSource
from webgate.media.codecs import ulaw_encode


class FakeDirect:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, int]] = []
        self.stopped = False

    def send(self, payload_type: int, payload: bytes, samples: int, marker: bool = False) -> None:
        self.sent.append((payload_type, payload, samples))

    def stop(self) -> None:
        self.stopped = True


class FakePeer:
    def __init__(self) -> None:
        self.state = "new"
        self.rx = 0
        self.closed = 0
        self.direct: FakeDirect | None = None
        self.direct_pts: set[int] = set()
        self.on_rtp: Callable[[int, int, int, bool, bytes], None] | None = None

    def packets_received(self) -> int:
        return self.rx

    def start_direct(self, payload_types: set[int], on_rtp: Callable[[int, int, int, bool, bytes], None]) -> FakeDirect | None:
        self.direct_pts, self.on_rtp = payload_types, on_rtp
        self.direct = FakeDirect()
        return self.direct

    def close(self) -> None:
        self.closed += 1


class FakeCall:
    session_id = "12345678"

    def __init__(self, media_path: str = "packet", codec: str = "PCMU") -> None:
        self.media_path = media_path
        self.codec = codec
        self.ended = False
        self.stream: Any = object()
        self.payloads: list[tuple[bytes, int]] = []
        self.audio: list[tuple[Any, int]] = []
        self.dtmf: list[tuple[str, int]] = []
        self.hung_up: list[str] = []

    def send_payload(self, payload: bytes, samples: int) -> None:
        self.payloads.append((payload, samples))

    def send_audio(self, pcm: Any, rate: int) -> None:
        self.audio.append((pcm, rate))

    def send_dtmf(self, digit: str, duration_ms: int) -> None:
        self.dtmf.append((digit, duration_ms))

    def hangup(self, cause: str = "client_hangup") -> None:
        self.hung_up.append(cause)


def _leg(codec: str = "PCMU", event_pt: int | None = None, **settings: Any) -> tuple[WebRtcCallLeg, FakePeer, Clock, list[dict[str, Any]]]:
    clock, peer, signals = Clock(), FakePeer(), []
    leg = WebRtcCallLeg("127.0.0.1:5000", WebRtcSettings(**settings), signals.append, clock, peer)
    leg.out_track = SipAudioSource(48000)
    assert leg.answered(AnswerInfo(codec, 0 if codec == "PCMU" else 111, event_pt=event_pt, event_rate=8000)) == codec
    return leg, peer, clock, signals


def test_packet_path_both_ways() -> None:
    leg, _peer, _clock, _ = _leg(direct_audio=False)
    call = FakeCall("packet")
    leg.attach(call)  # type: ignore[arg-type]
    assert leg.packet_codecs == ("PCMU",)
    assert leg.out_track is not None and leg.out_track.rate == 8000  # played out at the codec's own rate
    assert leg.rtp_from_browser(0, 1, 160, b"\xff" * 160)  # taken off aiortc's receiver
    assert call.payloads == [(b"\xff" * 160, 160)] and leg.stats.packets_relayed == 1
    leg.payload_from_sip(call, b"\x00" * 80, 80)  # type: ignore[arg-type]
    track = leg.out_track
    assert track.packet_codec == "PCMU"
    assert track.due_in(100.0) == 0.0
    first = track.next_frame()
    assert isinstance(first, EncodedAudio) and bytes(first) == b"\x00" * 80 and first.pts == 0
    assert abs(track.due_in(100.0) - 0.01) < 1e-9  # 80 samples later
    second = track.next_frame()  # nothing queued: silence of one 20 ms frame
    assert isinstance(second, EncodedAudio) and bytes(second) == b"\xff" * 160 and second.pts == 80
    assert track.payloads_sent == 1 and track.frames_silent == 1


def test_frame_path_is_left_to_aiortc_and_path_switch_clears_the_queue() -> None:
    leg, _peer, _clock, _ = _leg("G722", direct_audio=False)
    call = FakeCall("frame", codec="PCMU")
    leg.attach(call)  # type: ignore[arg-type]
    assert leg.packet_codecs == ()
    assert not leg.rtp_from_browser(111, 1, 0, b"\x00" * 160)  # aiortc decodes it
    leg.audio_from_browser(np.zeros(320, dtype=np.int16), 16000)
    assert len(call.audio) == 1 and call.audio[0][1] == 16000
    leg.audio_from_sip(call, np.zeros(160, dtype=np.int16), 8000)  # type: ignore[arg-type]
    track = leg.out_track
    assert track is not None and track.rate == 16000
    track.push_payload(b"x")
    leg.media_path_changed(call, "frame", "packet")  # type: ignore[arg-type]
    assert track.packet_codec is None and leg.stats.transcoded is False
    track.due_in(0.0)
    assert track.next_frame() is not None and track.frames_silent == 1  # both queues were emptied


def test_dtmf_from_the_browser_once_per_event() -> None:
    leg, _peer, _clock, _ = _leg(event_pt=101)
    call = FakeCall("packet")
    leg.attach(call)  # type: ignore[arg-type]
    for end, duration in ((False, 160), (True, 800), (True, 800), (True, 800)):
        ev = struct.pack("!BBH", 5, (0x80 if end else 0) | 10, duration)
        assert leg.rtp_from_browser(101, 7, 4000, ev)
    assert call.dtmf == [("5", 100)] and leg.stats.dtmf_from_browser == 1


def test_ice_timeout_hangs_up_and_a_silent_browser_ends_the_call() -> None:
    leg, peer, clock, _ = _leg(ice_timeout_s=4, direct_audio=False)
    call = FakeCall()
    leg.attach(call)  # type: ignore[arg-type]
    leg.answer_applied()
    peer.state = "connecting"
    clock.advance(4)
    assert call.hung_up == ["ice_timeout"]

    leg, peer, clock, _ = _leg(ice_timeout_s=4, direct_audio=False)
    call = FakeCall()
    leg.attach(call)  # type: ignore[arg-type]
    leg.answer_applied()
    peer.state = "connected"
    leg.peer_state_changed("connected")
    assert peer.direct is None  # [webrtc] direct_audio = false
    for _ in range(10):  # something arrives every second: the call goes on
        peer.rx += 1
        clock.advance(1)
    assert call.hung_up == []
    clock.advance(5)  # nothing for ice_timeout_s
    assert call.hung_up == ["ice_failed"]
    assert leg.peer.state == "connected"  # ended by the watchdog, not by aiortc


def test_direct_audio_takes_both_paths_once_connected() -> None:
    leg, peer, _clock, _ = _leg(event_pt=101)
    call = FakeCall("frame")
    leg.attach(call)  # type: ignore[arg-type]
    peer.state = "connected"
    leg.peer_state_changed("connected")
    direct = peer.direct
    assert direct is not None and peer.direct_pts == {0, 101} and leg.out_track is not None and leg.out_track.direct
    # frame path toward the browser: encoded here and sent at once
    leg.audio_from_sip(call, np.zeros(160, dtype=np.int16), 8000)  # type: ignore[arg-type]
    assert [(pt, len(p), n) for pt, p, n in direct.sent] == [(0, 160, 160)]
    # and from it: decoded here
    assert peer.on_rtp is not None
    peer.on_rtp(0, 1, 160, False, ulaw_encode(np.zeros(160, dtype=np.int16)))
    assert len(call.audio) == 1 and call.audio[0][1] == 8000
    # packet path: relayed
    call.media_path = "packet"
    peer.on_rtp(0, 2, 320, False, b"\xff" * 160)
    leg.payload_from_sip(call, b"\xd5" * 160, 160)  # type: ignore[arg-type]
    assert call.payloads == [(b"\xff" * 160, 160)] and direct.sent[-1] == (0, b"\xd5" * 160, 160)


def test_call_events_and_close() -> None:
    leg, peer, clock, signals = _leg()
    call = FakeCall()
    leg.attach(call)  # type: ignore[arg-type]
    leg.answer_applied()
    leg.call_progress(call, CallState.ANSWERED)  # type: ignore[arg-type]
    leg.dtmf_received(call, "7", "rfc4733")  # type: ignore[arg-type]
    leg.call_ended(call, "busy", 486)  # type: ignore[arg-type]
    assert signals == [
        {"type": "progress", "state": "answered"},
        {"type": "dtmf", "digit": "7", "method": "rfc4733"},
        {"type": "ended", "cause": "busy", "status": 486},
    ]
    assert leg.closed and peer.closed == 1 and not clock.getDelayedCalls()
    leg.close()
    assert peer.closed == 1
