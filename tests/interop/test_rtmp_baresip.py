"""ffmpeg (RTMP encoder and player) <-> webgate <-> baresip (a real SIP phone).

One baresip (auto-answer, a 440 Hz WAV as its microphone, recording what it decodes) is shared by
the module. For each FLV codec an ffmpeg publishes an 800 Hz tone to ``rtmp://GW/call/bob``; the
dial plan routes ``bob`` (a public ``[[route]]``) to baresip over SIP. A second ffmpeg plays
``call/bob`` or ``session/ID`` and records the far end's audio to WAV. Measured: the dominant
frequency of what baresip heard (must be ffmpeg's 800 Hz) and of what ffmpeg recorded (baresip's
440 Hz). Ending the publish hangs up: baresip sees the BYE.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.rtmp_helpers import Gateway, ffmpeg
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.conftest import require_program, tone_baresip
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs

FFMPEG_HZ = 800.0
BARESIP_HZ = 440.0
RESULTS: dict[str, tuple[float, float]] = {}

CODECS = {
    "nellymoser": (["-c:a", "nellymoser", "-ar", "8000"], "nellymoser"),
    "speex": (["-c:a", "libspeex", "-ar", "16000"], "speex"),
    "aac": (["-c:a", "aac", "-b:a", "64k"], "aac"),
    "pcmu": (["-c:a", "pcm_mulaw", "-ar", "8000"], "pcm_mulaw"),
}


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Baresip]:
    """One baresip for the module; its microphone is a 60 s 440 Hz tone (aufile restarts per call)."""
    require_program("ffmpeg", "ffmpeg")
    with tone_baresip(tmp_path_factory.mktemp("rtmp_baresip"), BARESIP_HZ) as b:
        yield b


def _gateway(bob: peers.Baresip) -> Gateway:
    return Gateway(peers.phone_route(bob, codecs=["PCMU"], dtmf="rfc4733"))


def _fresh(bob: peers.Baresip) -> None:
    """Forget events of earlier tests (one baresip serves the module), so waits see this call's only."""
    assert bob.ctrl is not None and bob.running(), bob.log_tail(1500)
    bob.events(0.05)
    bob.ctrl._consumed = len(bob.ctrl.events)


async def _closed(bob: peers.Baresip, timeout: float = 8.0) -> None:
    await deferToThread(bob.wait_event, "CALL_CLOSED", timeout)


async def _established(bob: peers.Baresip, timeout: float = 10.0) -> None:
    await deferToThread(bob.wait_event, "CALL_ESTABLISHED", timeout)


def _tone_of(path: Path | None, what: str, skip_s: float = 1.0) -> tuple[float, float]:
    assert path is not None and path.exists(), f"{what}: no recording"
    x, rate = read_wav(path)
    assert len(x) > rate * (skip_s + 1.0), f"{what}: only {len(x) / rate:.2f} s recorded"
    tail = x[int(rate * skip_s):]
    return dominant_frequency(tail, rate), rms_dbfs(tail)


@pytest.mark.parametrize(("name", "play"), [(n, "call") for n in CODECS] + [("aac", "session")])
@pytest_twisted.ensureDeferred
async def test_ffmpeg_publishes_to_baresip_both_directions(name: str, play: str, bob: peers.Baresip, tmp_path: Path) -> None:
    codec_args, in_codec = CODECS[name]
    await deferToThread(_fresh, bob)
    gw = _gateway(bob)
    before = set(bob.rec_dir.glob("dump-*-dec.wav"))
    try:
        pub = ffmpeg(
            "-re", "-f", "lavfi", "-i", f"sine=frequency={FFMPEG_HZ:g}:sample_rate=44100:duration=7",
            *codec_args, "-f", "flv", gw.url("call/bob"), timeout=30,
        )
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), \
            f"baresip did not answer; baresip log:\n{bob.log_tail(1500)}"
        call = next(iter(gw.svc.registry))
        await _established(bob)
        assert call.codec == "PCMU"
        path = "call/bob" if play == "call" else f"session/{call.session_id}"
        wav = tmp_path / "from_baresip.wav"
        await sleep(0.5)
        player = ffmpeg("-i", gw.url(path), "-map", "0:a", "-t", "3", "-ac", "1", "-y", str(wav), timeout=25)
        code, _out, err = await player.wait()
        assert code == 0, err.decode(errors="replace")
        assert call.leg.audio_in.codec == in_codec
        assert call.leg.audio_in.bad_tags == 0
        code, _out, err = await pub.wait()
        assert code == 0, err.decode(errors="replace")
        # ending the publish hung up: baresip got the BYE
        await _closed(bob)
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert call.end_cause == "client_hangup"

        heard = bob.recorded_wav("dec")
        assert heard not in before, "baresip wrote no recording for this call"
        heard_f, heard_db = _tone_of(heard, f"baresip heard ({name})")
        rec_f, rec_db = _tone_of(wav, f"ffmpeg recorded ({name}, {path})", skip_s=0.8)
        RESULTS[f"{name}/{play}"] = (heard_f, rec_f)
        print(f"\n{name} via {play}: baresip heard {heard_f:.1f} Hz at {heard_db:.1f} dBFS;"
              f" ffmpeg recorded {rec_f:.1f} Hz at {rec_db:.1f} dBFS")
        assert abs(heard_f - FFMPEG_HZ) < 20, heard_f
        assert heard_db > -35, heard_db
        assert abs(rec_f - BARESIP_HZ) < 20, rec_f
        assert rec_db > -35, rec_db
    finally:
        await gw.stop()
        await sleep(0.2)
