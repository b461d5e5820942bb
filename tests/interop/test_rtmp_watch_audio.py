"""Supervisor audio over RTMP with real peers (issue 14): ffmpeg publishes red H.264 video and a
660 Hz tone (G.711 µ-law) to ``call/tone``, whose far end answers with its own 1000 Hz tone;
an ffmpeg player of ``watch/SESSIONID?token=JWT&audio=both[&codec=C]`` decodes the audio it gets
(in the asked codec, AAC by default as for players of ``session/ID``), and both tones are in
it, each a large share of the energy, while the video still decodes. ``audio=none`` (the
default) gets no audio stream at all and starts no mixer."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, Process, ffmpeg
from tests.calls.gw import wait_for
from tests.legs.test_monitor import band_share
from tests.require import require_program
from webgate.calls.call import CallState
from webgate.legs.hub import MediaHub
from webgate.security.tokens import mint_token

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1

KEY = "rtmp-watch-audio-key-0123456789abcdef"
CALLER_HZ = 660
FAR_END_HZ = 1000  # [builtin] tone_hz's default


def _publish(gw: Gateway, seconds: float = 20.0) -> Process:
    return ffmpeg(
        "-re",
        "-f", "lavfi", "-i", "color=c=red:size=320x240:rate=25",
        # as loud as the built-in tone (0.4 of full scale): the two parties weigh the same in the mix
        "-f", "lavfi", "-i", f"aevalsrc=0.4*sin(2*PI*{CALLER_HZ}*t):s=8000",
        "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "0",
        "-c:a", "pcm_mulaw", "-ar", "8000",
        "-f", "flv", gw.url("call/tone"),
        timeout=seconds + 30,
    )


async def _live_call(gw: Gateway) -> Any:
    def ready() -> bool:
        return any(isinstance(c.hub, MediaHub) and c.hub.last_keyframe() and c.state is CallState.ANSWERED for c in gw.svc.registry)

    assert await wait_for(ready, 15), [getattr(c.hub, "stats", None) for c in gw.svc.registry]
    return next(iter(gw.svc.registry))


@pytest_twisted.ensureDeferred
async def test_audio_both_players_hear_both_parties() -> None:
    gw = Gateway({"tokens": {"key": KEY}})
    pub = _publish(gw)
    try:
        call = await _live_call(gw)
        token = mint_token(KEY, sub="supervisor", watch=call.session_id)
        base = f"watch/{call.session_id}?token={token}"
        for codec in ("pcmu", None):  # None: the players' default, AAC
            url = gw.url(base + "&audio=both" + (f"&codec={codec}" if codec else ""))
            # what the stream holds: H.264 video and audio in the asked codec
            code, out, err = await Process([require_program("ffprobe"), "-v", "error", "-analyzeduration", "1000000",
                                            "-show_entries", "stream=codec_type,codec_name", "-of", "json", url], 30).wait()
            assert code == 0, err.decode(errors="replace")
            streams = sorted((s["codec_type"], s["codec_name"]) for s in json.loads(out)["streams"])
            assert streams == [("audio", "pcm_mulaw" if codec == "pcmu" else "aac"), ("video", "h264")], streams

            code, raw, err = await ffmpeg("-analyzeduration", "1000000", "-i", url, "-map", "0:a", "-t", "3", "-ac", "1",
                                          "-ar", "8000", "-f", "s16le", "-", timeout=40).wait()
            assert code == 0, err.decode(errors="replace")
            pcm = np.frombuffer(raw, np.int16)
            assert len(pcm) >= int(2.5 * 8000), len(pcm)
            tail = pcm[-2 * 8000:]
            caller_share, far_share = band_share(tail, 8000, CALLER_HZ), band_share(tail, 8000, FAR_END_HZ)
            print(f"\n[{codec or 'aac (default)'}] audio=both: {CALLER_HZ} Hz {caller_share:.2f}, {FAR_END_HZ} Hz {far_share:.2f} of the energy")
            assert caller_share > 0.15 and far_share > 0.15 and caller_share + far_share > 0.6, (caller_share, far_share)
            assert await wait_for(lambda: call.hub.monitor is None and call.monitor is None, 5)  # the player left: no mixer

        # audio=none (the default): no audio stream, no mixer
        code, out, err = await Process([require_program("ffprobe"), "-v", "error", "-analyzeduration", "1000000",
                                        "-show_entries", "stream=codec_type", "-of", "json", gw.url(base)], 30).wait()
        assert code == 0, err.decode(errors="replace")
        assert [s["codec_type"] for s in json.loads(out)["streams"]] == ["video"]
    finally:
        pub.kill()
        await pub.wait()
        await gw.stop()
