"""ffmpeg as a real RTMP encoder and player against webgate's RTMP ingress (encoder style).

ffmpeg publishes a tone to rtmp://HOST/call/echo in each FLV audio codec; a second ffmpeg plays
rtmp://HOST/call/echo (or rtmp://HOST/session/ID) and records the far end's audio to WAV; the
test measures the dominant frequency of what came back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, ffmpeg
from tests.calls.gw import sleep, wait_for
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs
from webgate.proto.flv import (
    AAC_SEQUENCE_HEADER,
    SOUND_AAC,
    TAG_AUDIO,
    FlvTag,
    parse_audio_tag,
    read_flv,
)

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1

TONE_HZ = 800.0
RESULTS: dict[str, float] = {}


def _publish(gw: Gateway, codec_args: list[str], path: str = "call/echo", seconds: float = 7.0):  # type: ignore[no-untyped-def]
    return ffmpeg(
        "-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=44100:duration={seconds:g}",
        *codec_args, "-f", "flv", gw.url(path), timeout=seconds + 20,
    )


async def _live_call(gw: Gateway):  # type: ignore[no-untyped-def]
    assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 8), "no answered call"
    return next(iter(gw.svc.registry))


async def _record(gw: Gateway, path: str, wav: Path, seconds: float = 3.0) -> tuple[float, float, list[FlvTag]]:
    """Play ``path`` with ffmpeg: the FLV as received (stream copy) and decoded to WAV."""
    t = f"{seconds:g}"
    raw = wav.with_suffix(".flv")
    player = ffmpeg(
        "-i", gw.url(path),
        "-map", "0:a", "-t", t, "-c:a", "copy", "-f", "flv", "-y", str(raw),
        "-map", "0:a", "-t", t, "-ac", "1", "-y", str(wav),
        timeout=seconds + 20,
    )
    code, _out, err = await player.wait()
    assert code == 0, err.decode(errors="replace")
    pcm, rate = read_wav(wav)
    assert len(pcm) >= rate * (seconds - 0.5), f"only {len(pcm) / rate:.2f} s recorded"
    tail = pcm[len(pcm) // 3 :]
    _, tags = read_flv(raw.read_bytes())
    audio = [tag for tag in tags if tag.tag_type == TAG_AUDIO]
    return dominant_frequency(tail, rate), rms_dbfs(tail), audio


def _check_timestamps(audio: list[FlvTag], seconds: float) -> None:
    stamps = [tag.timestamp for tag in audio]
    assert stamps == sorted(stamps), "timestamps go backwards"
    span = (stamps[-1] - stamps[0]) / 1000.0
    assert seconds - 0.3 <= span <= seconds + 0.2, span


#: what webgate must have seen in the published FLV tags
IN_CODEC = {
    "nellymoser_8k": "nellymoser",
    "nellymoser_44k": "nellymoser",
    "speex": "speex",
    "aac": "aac",
    "pcmu": "pcm_mulaw",
    "pcma": "pcm_alaw",
}
#: FLV SoundFormat each out codec must arrive in (SIP leg is PCMU)
OUT_FORMAT = {"pcmu": 8, "pcma": 7, "g711": 8, "nellymoser": 5, "speex": 11, "aac": 10}

CODECS = {
    "nellymoser_8k": ["-c:a", "nellymoser", "-ar", "8000"],
    "nellymoser_44k": ["-c:a", "nellymoser"],
    "speex": ["-c:a", "libspeex", "-ar", "16000"],
    "aac": ["-c:a", "aac", "-b:a", "64k"],
    "pcmu": ["-c:a", "pcm_mulaw", "-ar", "8000"],
    "pcma": ["-c:a", "pcm_alaw", "-ar", "8000"],
}


@pytest.mark.parametrize("name", list(CODECS))
@pytest_twisted.ensureDeferred
async def test_ffmpeg_publishes_to_echo_and_hears_its_tone(name: str, tmp_path: Path) -> None:
    gw = Gateway()
    try:
        pub = _publish(gw, CODECS[name])
        call = await _live_call(gw)
        assert call.ingress_kind == "rtmp"
        await sleep(0.5)
        freq, level, audio = await _record(gw, "call/echo", tmp_path / "back.wav")
        leg = call.leg
        assert leg.audio_in.codec == IN_CODEC[name]
        assert leg.audio_in.bad_tags == 0
        assert leg.audio_in.sent_frames > 50
        # default out codec for encoder-style play is AAC, sequence header first
        first, _ = parse_audio_tag(audio[0].data)
        assert first.sound_format == SOUND_AAC and first.aac_packet_type == AAC_SEQUENCE_HEADER
        _check_timestamps(audio, 3.0)
        RESULTS[f"publish {name} / play aac"] = freq
        print(f"\n{name}: far end's audio back as AAC: {freq:.1f} Hz at {level:.1f} dBFS")
        assert abs(freq - TONE_HZ) < 15, freq
        assert level > -35
        if name in ("pcmu", "pcma"):
            # the published G.711 went to SIP untranscoded only when the law matches the SIP codec
            assert call.codec == "PCMU"
            if name == "pcmu":
                assert leg.audio_in.passthrough_frames == leg.audio_in.sent_frames
            else:
                assert leg.audio_in.passthrough_frames == 0
        code, _, err = await pub.wait()
        assert code == 0, err.decode(errors="replace")
        # ending the publish hung up the call
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert call.end_cause == "client_hangup"
    finally:
        await gw.stop()


@pytest.mark.parametrize("out", ["pcmu", "pcma", "g711", "nellymoser", "speex", "aac"])
@pytest_twisted.ensureDeferred
async def test_ffmpeg_plays_session_in_each_out_codec(out: str, tmp_path: Path) -> None:
    gw = Gateway()
    try:
        pub = _publish(gw, CODECS["pcmu"], seconds=6)
        call = await _live_call(gw)
        await sleep(0.3)
        freq, level, audio = await _record(gw, f"session/{call.session_id}?codec={out}", tmp_path / "s.wav", 2.5)
        assert {tag.data[0] >> 4 for tag in audio} == {OUT_FORMAT[out]}
        _check_timestamps(audio, 2.5)
        RESULTS[f"play session as {out}"] = freq
        print(f"\nsession/{call.session_id}?codec={out}: {freq:.1f} Hz at {level:.1f} dBFS")
        assert abs(freq - TONE_HZ) < 15, freq
        assert level > -35
        pub.kill()
        await pub.wait()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await gw.stop()
