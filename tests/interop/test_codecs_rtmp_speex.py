"""RTMP Speex <-> SIP speex/16000 without transcoding: ffmpeg publishes Speex (FLV sound format 11,
16 kHz wideband) through a trunk that offers only speex/16000 (to the gateway's own echo, over real
SIP on loopback); the frames go to RTP undecoded and come back to an ffmpeg player undecoded.
ffmpeg is the only decoder on the path; the tone is measured in what it recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, ffmpeg
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.test_rtmp_ffmpeg import (
    TONE_HZ,
    _check_timestamps,
    _live_call,
    _record,
)
from webgate.ops.metrics import GatewayMetrics
from webgate.proto.flv import SOUND_AAC, SOUND_SPEEX, parse_audio_tag

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1


def speex_gateway() -> Gateway:
    """Destination ``spx`` goes out through a trunk offering only speex/16000 to our own ``echo``."""
    sip_port = peers.free_port("both")
    return Gateway(
        {
            "sip": {"udp": f"127.0.0.1:{sip_port}"},
            "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{sip_port}", "codecs": ["speex/16000"]}],
            "route": [{"pattern": "spx", "trunk": "self", "rewrite": "echo", "public": True}],
        }
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("frames_per_tag, out", [(1, "speex"), (3, "speex"), (1, "aac")])
@pytest_twisted.ensureDeferred
async def test_speex_publisher_to_speex_trunk_is_relayed(frames_per_tag: int, out: str, tmp_path: Path) -> None:
    gw = speex_gateway()
    metrics = GatewayMetrics(gw.svc)  # /metrics' figures, fed as the gateway feeds them
    gw.manager.observers.append(metrics)
    try:
        pub = ffmpeg(
            "-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=16000:duration=7",
            "-c:a", "libspeex", "-ar", "16000", "-frames_per_packet", str(frames_per_tag),
            "-f", "flv", gw.url("call/spx"), timeout=27,
        )
        call = await _live_call(gw)
        assert call.codec == "speex" and call.stream is not None and call.stream.media is not None
        assert call.stream.media.codec.clock_rate == 16000
        assert [c.rtpmap for c in call.offer_sdp.media[0].codecs() if not c.is_telephone_event] == ["speex/16000"]
        assert call.media_path == "packet"
        assert gw.manager.counters["packet_path"] == 1 and gw.manager.counters["frame_path"] == 0
        answered = {t: metrics.registry.get_sample_value("webgate_calls_answered_total", {"transcoded": t}) for t in ("true", "false")}
        assert answered == {"true": None, "false": 1.0}, answered  # counted as passed through
        assert metrics.registry.get_sample_value("webgate_active_calls_transcoded", {"transcoded": "false"}) == 1.0
        to_sip: list[bytes] = []  # what the leg hands to RTP (observed, not replaced)
        send_payload = call.stream.send_payload

        def observe(payload: bytes, samples: int | None = None, marker: bool = False) -> None:
            to_sip.append(payload)
            send_payload(payload, samples, marker)

        call.stream.send_payload = observe
        await sleep(0.5)
        freq, level, audio = await _record(gw, f"call/spx?codec={out}", tmp_path / "back.wav")
        leg = call.leg
        first, _ = parse_audio_tag(audio[0].data)
        stats = call.stream.stats
        print(f"\n[speex x{frames_per_tag} per tag, play {out}] {freq:.1f} Hz at {level:.1f} dBFS; "
              f"{leg.audio_in.tags} tags in, {leg.audio_in.passthrough_frames}/{leg.audio_in.sent_frames} frames relayed, "
              f"{stats.packets_received} RTP packets back, {len(audio)} tags out")
        assert leg.audio_in.codec == "speex" and leg.audio_in.bad_tags == 0
        # every published frame went to SIP as it was, one RTP packet per 20 ms frame
        assert leg.audio_in.sent_frames > 100 and leg.audio_in.passthrough_frames == leg.audio_in.sent_frames
        assert stats.packets_received > 100 and stats.bad_packets == 0
        if out == "speex":
            assert first.sound_format == SOUND_SPEEX and all(parse_audio_tag(t.data)[0].sound_format == SOUND_SPEEX for t in audio)
            assert leg._speex_decoder is None  # nothing decoded on our side
            # bit-exact both ways: the player got a contiguous run of the very frames sent to SIP
            played = [parse_audio_tag(t.data)[1] for t in audio]
            start = to_sip.index(played[0])
            assert played == to_sip[start : start + len(played)]
        else:
            assert first.sound_format == SOUND_AAC and leg._speex_decoder is not None  # decoded once for AAC
        _check_timestamps(audio, 3.0)
        assert abs(freq - TONE_HZ) < 15, freq
        # (the level is not compared with what was published: a Speex decoder that joins a pure
        # tone mid-stream -- ffmpeg's and libspeex's alike -- settles far louder than one that
        # heard it from the first frame; see docs/decisions.md)
        assert level > -35
        code, _, err = await pub.wait()
        assert code == 0, err.decode(errors="replace")
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.manager.builtin_calls, 5)
    finally:
        await gw.stop()
