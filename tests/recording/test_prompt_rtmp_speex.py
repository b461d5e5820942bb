"""The recording's beep on a relayed RTMP Speex call, real encoder: ffmpeg publishes Speex
(libspeex, 16 kHz, one 20 ms frame a tag, 800 Hz) through a recording route whose trunk offers
only speex/16000, to the gateway's own ``echo`` over real SIP; the frames are relayed undecoded
(packet path) and ``record_beep_s = 1`` mixes the beep into them (decoded, mixed, re-encoded by
webgate/media/recording/prompt.py while it plays). Measured: the file's left channel (what went
to SIP) holds the 1400 Hz beeps about a second apart over the tone, and an ffmpeg player of the
call hears them (they come back from the echo, and toward it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, ffmpeg
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.test_rtmp_ffmpeg import _live_call, _record
from tests.recording.helpers import read_stereo
from tests.recording.test_audio_prompt import band
from tests.recording.test_prompt_relay import assert_beeps
from webgate.media.analysis import read_wav
from webgate.media.recording.prompt import BEEP_HZ

TONE_HZ = 800.0
pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_beep_in_a_relayed_rtmp_speex_call(tmp_path: Path) -> None:
    sip_port = peers.free_port("both")
    gw = Gateway({
        "sip": {"udp": f"127.0.0.1:{sip_port}"},
        "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{sip_port}", "codecs": ["speex/16000"]}],
        "route": [{"pattern": "spx", "trunk": "self", "rewrite": "echo", "public": True, "record": "audio"}],
        "recording": {"dir": str(tmp_path / "rec"), "min_free_mb": 0, "flush_s": 0.25, "record_beep_s": 1},
    })
    try:
        pub = ffmpeg(
            "-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=16000:duration=6",
            "-c:a", "libspeex", "-ar", "16000", "-frames_per_packet", "1",
            "-f", "flv", gw.url("call/spx"), timeout=26,
        )
        call = await _live_call(gw)
        assert call.codec == "speex" and call.media_path == "packet" and call.recording is not None
        await sleep(0.3)
        _freq, _level, _audio = await _record(gw, "call/spx?codec=speex", tmp_path / "back.wav", seconds=3.0)
        prompt = gw.svc.recordings.active[call.session_id].prompt
        assert prompt is not None
        recoded = prompt.recoded
        code, _, err = await pub.wait()
        assert code == 0, err.decode(errors="replace")
        assert await wait_for(lambda: call.ended, 5)
    finally:
        await gw.stop()
    assert recoded[0] >= 20 and recoded[1] >= 20, recoded
    side = json.loads(Path(call.recording).read_text())
    stereo, rate = read_stereo(side["files"]["audio"])
    assert rate == 16000
    left = stereo[int(0.5 * rate):int(5.0 * rate), 0]
    assert_beeps(left, rate, f"the recording's left channel (Speex relayed, recoded {recoded})")
    assert band(left, rate, TONE_HZ) > 0.3
    heard, hrate = read_wav(tmp_path / "back.wav")
    print(f"[speex relayed] the player: {band(heard, hrate, BEEP_HZ):.3f} of its energy at {BEEP_HZ:g} Hz")
    assert band(heard, hrate, BEEP_HZ) > 0.02 and band(heard, hrate, TONE_HZ) > 0.3
