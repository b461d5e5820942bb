"""Watching a call over RTMP with real peers (issue 14): ffmpeg publishes H.264 video of one colour
and audio to ``call/echo``; ``ffprobe``/``ffmpeg`` play ``watch/SESSIONID?token=JWT`` and must see
H.264 at the published size, decode >= 50 frames of the published colour (a second run with
another colour proves it is the caller's), get the same failure for every refusal, and end when
the publisher stops. Flash RPC data with librtmp (python-librtmp over Debian's librtmp1, as a
subprocess): the Flash client's ``sendData`` reaches a librtmp player of ``watch/ID`` as an
``onData`` message, and a watcher's message reaches the Flash client's ``data`` callback.

Every figure is measured in what the other side decoded.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, Process, ffmpeg
from tests.calls.gw import sleep, wait_for
from tests.require import require_module, require_program
from webgate.calls.call import CallState
from webgate.legs.hub import MediaHub
from webgate.proto.flv import TAG_VIDEO, read_flv
from webgate.security.tokens import mint_token

pytestmark = pytest.mark.usefixtures("ffmpeg_program")  # fails under WEBGATE_REQUIRE_PEERS=1

KEY = "rtmp-watch-interop-key-0123456789abcdef"
W, H = 320, 240
#: the mean RGB a decoder shows for lavfi's colours after yuv420p (BT.601, limited range)
COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}


def watch_token(watch: str | list[str], *, ttl_s: int = 600, now: float | None = None) -> str:
    """A call token with the ``watch`` claim (what ``webgate token --watch ID`` mints)."""
    return mint_token(KEY, watch=watch, ttl_s=ttl_s, now=now)


def _gateway() -> Gateway:
    return Gateway({"tokens": {"key": KEY}})


def _publish(gw: Gateway, colour: str, seconds: float = 20.0) -> Process:
    """ffmpeg as an encoder: ``colour`` at 320x240, 25 fps, H.264 with a keyframe a second and no
    B-frames, plus an 800 Hz tone as G.711 µ-law, in real time to call/echo."""
    return ffmpeg(
        "-re",
        "-f", "lavfi", "-i", f"color=c={colour}:size={W}x{H}:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=800:sample_rate=8000",
        "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "0",
        "-c:a", "pcm_mulaw", "-ar", "8000",
        "-f", "flv", gw.url("call/echo"),
        timeout=seconds + 30,
    )


async def _live_call(gw: Gateway) -> Any:
    """The publisher's call once its hub has the video's keyframe and size."""
    def ready() -> bool:
        return any(isinstance(c.hub, MediaHub) and c.hub.stats.width and c.hub.last_keyframe() for c in gw.svc.registry)

    assert await wait_for(ready, 15), [getattr(c.hub, "stats", None) for c in gw.svc.registry]
    return next(iter(gw.svc.registry))


def _probe(url: str) -> Process:
    return Process([require_program("ffprobe"), "-v", "error", "-select_streams", "v:0",
                    "-show_entries", "stream=codec_name,width,height", "-of", "json", url], 30)


def _decode(url: str, frames: int = 60) -> Process:
    return ffmpeg("-i", url, "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "rgb24", "-", timeout=40)


def _mean_rgb(raw: bytes) -> tuple[int, np.ndarray]:
    size = W * H * 3
    n = len(raw) // size
    frames = np.frombuffer(raw[: n * size], np.uint8).reshape(n, H, W, 3)
    return n, frames.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("colour", ["red", "blue"])
@pytest_twisted.ensureDeferred
async def test_ffmpeg_watches_the_published_colour(colour: str) -> None:
    gw = _gateway()
    pub = _publish(gw, colour)
    try:
        call = await _live_call(gw)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 8)
        url = gw.url(f"watch/{call.session_id}?token={watch_token(call.session_id)}")

        code, out, err = await _probe(url).wait()
        assert code == 0, err.decode(errors="replace")
        streams = json.loads(out)["streams"]
        assert streams == [{"codec_name": "h264", "width": W, "height": H}], streams

        code, raw, err = await _decode(url).wait()
        assert code == 0, err.decode(errors="replace")
        n, mean = _mean_rgb(raw)
        print(f"\n{colour}: ffmpeg decoded {n} frames of watch/{call.session_id}, mean RGB {mean.round(1).tolist()}")
        assert n >= 50, n
        want = np.array(COLOURS[colour], float)
        assert np.abs(mean - want).max() < 40, (mean, want)
        assert call.hub.stats.packets_forwarded > 50
        assert call.hub.snapshot()["video"]["codec"] == "H264"
    finally:
        pub.kill()
        await pub.wait()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_every_refusal_fails_the_same_and_the_publishers_end_ends_the_watch(tmp_path: Path) -> None:
    gw = _gateway()
    pub = _publish(gw, "red", seconds=30)
    try:
        call = await _live_call(gw)
        sid = call.session_id
        unknown = "10000000" if sid != "10000000" else "10000001"
        tokens = {
            "no token": None,
            "token for another session": watch_token(unknown),
            "expired token": watch_token(sid, ttl_s=60, now=time.time() - 7200),
            "unknown session ID": watch_token("*"),
        }
        answers: dict[str, tuple[int | None, str]] = {}
        for what, token in tokens.items():
            target = unknown if what == "unknown session ID" else sid
            path = f"watch/{target}" + (f"?token={token}" if token else "")
            code, out, err = await _decode(gw.url(path), 5).wait()
            text = err.decode(errors="replace")
            server = re.findall(r"Server error: [^\n]*", text)
            assert server, text
            # the one thing that differs is the ID the client asked for (its own input)
            answers[what] = (code, server[0].replace(target, "ID"))
            assert out == b""
        print(f"\nrefusals: {answers}")
        assert len(set(answers.values())) == 1, answers
        assert next(iter(answers.values()))[0] != 0
        assert gw.factory.plays_refused == len(tokens)

        # a watcher that runs until the stream ends; then the publisher stops
        out_flv = tmp_path / "watched.flv"
        watcher = ffmpeg("-i", gw.url(f"watch/{sid}?token={watch_token(sid)}"), "-c", "copy", "-f", "flv", "-y", str(out_flv),
                         timeout=40)
        assert await wait_for(lambda: call.hub.snapshot()["video"]["watchers"] == 1, 10)
        await sleep(2.0)
        pub.interrupt()  # the encoder stops publishing: the call ends
        assert await wait_for(lambda: call.state is CallState.ENDED, 10)
        t0 = time.monotonic()
        code, _out, err = await watcher.wait()
        ended_after = time.monotonic() - t0
        print(f"watcher ended {ended_after:.2f} s after the call (exit {code})")
        assert code == 0, err.decode(errors="replace")
        assert ended_after < 5
        _, tags = read_flv(out_flv.read_bytes())
        video = [t for t in tags if t.tag_type == TAG_VIDEO]
        assert len(video) > 25 and video[0].data[:2] == b"\x17\x00", [t.data[:2] for t in video[:3]]
        assert call.end_cause == "client_hangup"
    finally:
        pub.kill()
        await pub.wait()
        await gw.stop()


def _librtmp_client(spec: dict[str, Any], timeout: float = 60.0) -> Any:
    from tests.interop.test_rtmp_librtmp import LibrtmpClient

    return LibrtmpClient(spec, timeout)


@pytest.fixture
def librtmp() -> None:
    require_module("librtmp", "python-librtmp")  # fails under WEBGATE_REQUIRE_PEERS=1


@pytest_twisted.ensureDeferred
async def test_flash_rpc_sendData_reaches_a_watcher_and_a_watchers_message_the_flash_client(librtmp: None) -> None:
    from tests.interop.test_rtmp_librtmp import SWF, rpc_url

    gw = _gateway()
    try:
        flash = _librtmp_client({
            "url": rpc_url(gw.rtmp_port, "alice", "alice", "secret-password", "Alice"),
            "publish": True, **SWF,
            "steps": [
                {"do": "call", "method": "invite", "args": ["echo"]},
                {"do": "wait", "name": "sessionId"},
                {"do": "wait", "name": "watchers", "timeout": 20},
                {"do": "call", "method": "sendData", "args": ["hello from flash"]},
                {"do": "call", "method": "sendData", "args": ["second, in order"]},
                {"do": "wait", "name": "data", "timeout": 20},
                {"do": "call", "method": "bye"},
            ],
        })
        got = await flash.wait(timeout=20, event="waited", name="sessionId")
        session_id = got["args"][0]
        call = gw.manager.registry.by_session_id(session_id)
        assert call is not None and isinstance(call.hub, MediaHub)

        player = _librtmp_client({
            "url": f"rtmp://127.0.0.1:{gw.rtmp_port}/watch/{session_id}?token={watch_token(session_id)} live=1 timeout=1",
            "watch": True, "steps": [{"do": "sleep", "seconds": 6.0}],
        })
        await player.wait(timeout=15, event="playing")
        watchers = await flash.wait(timeout=15, event="waited", name="watchers")
        assert watchers["args"] == [1]
        sent = await flash.wait(timeout=15, event="reply", method="sendData")
        assert sent["name"] == "_result" and sent["args"] == [True], flash.describe()

        # a watcher's message (from a WebRTC watcher in real life; RTMP watchers only receive)
        class Supervisor:
            identity = "supervisor-1"
            wants = "rtp"

            def video_started(self, *a: Any) -> None: ...
            def rtp_video(self, p: Any) -> None: ...
            def flv_video(self, t: Any) -> None: ...
            def data(self, label: str, data: Any) -> None: ...
            def ended(self, cause: str) -> None: ...

        sup = Supervisor()
        call.hub.add_watcher(sup)
        call.hub.data_from_watcher(sup, "webgate", "the agent sees you")
        data = await flash.wait(timeout=15, event="waited", name="data")
        assert data["args"] == ["the agent sees you", "webgate", "supervisor-1"], data

        assert await player.finish() == 0, player.describe()
        assert await flash.finish() == 0, flash.describe()
        on_data = [e["args"][0] for e in player.events() if e["event"] == "data_message" and e["name"] == "onData"]
        print(f"\nlibrtmp watcher got: {on_data}")
        assert on_data == [{"label": "webgate", "data": "hello from flash"}, {"label": "webgate", "data": "second, in order"}]
        assert call.hub.stats.data_from_caller == 2 and call.hub.stats.data_to_caller == 1
    finally:
        await gw.stop()
