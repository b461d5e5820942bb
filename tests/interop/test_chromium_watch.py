"""Chromium caller -> Chromium watcher: video and data by session ID (issue 14).

The caller is a headless Chromium whose camera is a Y4M of one solid colour (made by ffmpeg in the
test, ``--use-file-for-fake-video-capture``) and whose microphone is a 1 kHz tone; it calls ``echo``
with ``{video: true, data: true}`` through ``/html5_client/webgate.js``. A second Chromium watches
the call by its session ID with a ``watch: "*"`` token (an agent's). Everything is measured in what
the other side decoded:

- the watcher's video, drawn to a canvas, has the caller's colour (mean RGB), at the caller's
  size, and the ``video`` event reports it (a second run with another colour proves that the colour
  comes from the caller);
- data both ways, in order, none lost: 100 strings and one binary message each way, the caller's
  ``data`` events carrying the watcher's identity (its token ``sub``);
- the caller's ``watchers`` count goes 0 -> 1 -> 0;
- the caller still hears its own 1 kHz tone from ``echo``.

The last test drives the pages themselves: the demo page (``/``: video and data ticked, the chat
box, the watcher count) as the caller and the agent console (``/agent?session=..&token=..``) as
the watcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import sleep
from tests.interop.chromium_video import (
    CallerPage,
    WatcherPage,
    launch_chromium,
    quit_chromium,
    solid_y4m,
)
from tests.interop.test_chromium_calls import measured_hz, released
from tests.require import require_program
from webgate.media.analysis import write_wav
from webgate.media.tones import ToneGenerator
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"
TONE_HZ = 1000.0  # the caller's microphone; echo plays it back
WIDTH, HEIGHT = 320, 240
COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "0x20c040": (0x20, 0xC0, 0x40)}
RGB_TOLERANCE = 40  # per channel, after yuv420p, VP8 and back
BINARY = bytes(range(256)) * 4


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The caller's microphone (1 kHz WAV) and one camera Y4M per colour."""
    require_program("chromium", "chromium")
    require_program("chromedriver", "chromium-driver")
    require_program("ffmpeg", "ffmpeg")
    d = tmp_path_factory.mktemp("watch-media")
    wav = d / "tone1k_48k.wav"
    write_wav(wav, np.asarray(ToneGenerator(TONE_HZ, 48000, 0.5).generate(48000 * 5), dtype=np.int16), 48000)
    out = {"wav": str(wav)}
    for colour in COLOURS:
        out[colour] = str(solid_y4m(d / f"{colour}.y4m", colour, f"{WIDTH}x{HEIGHT}"))
    return out


@pytest.fixture(scope="module")
def watcher_browser(media: dict[str, str]) -> Iterator[Any]:
    """The agent's Chromium (shared by the module; it only receives)."""
    drv, profile = launch_chromium(media["wav"])
    try:
        yield drv
    finally:
        quit_chromium(drv, profile)


def agent_token() -> str:
    return mint_token(KEY, sub="agent", watch="*")


def close_to(rgb: list[float], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= RGB_TOLERANCE for a, b in zip(rgb, want, strict=True))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("colour", ["red", "blue"])
@pytest_twisted.ensureDeferred
async def test_chromium_caller_video_and_data_reach_a_chromium_watcher(
    media: dict[str, str], watcher_browser: Any, colour: str
) -> None:
    gw = Gateway({"tokens": {"key": KEY}})
    drv, profile = await deferToThread(launch_chromium, media["wav"], media[colour])
    caller = CallerPage(drv, gw.http, gw.url)
    watcher = WatcherPage(watcher_browser, gw.http, gw.url)
    try:
        await caller.open()
        start = await caller.call("echo", video=True, data=True)
        sid = start["sessionId"]
        assert start["watchers"] == 0
        assert (start["camera"]["width"], start["camera"]["height"]) == (WIDTH, HEIGHT), start
        answered = await caller.wait("X.call.state === 'answered' && X.call.pc.connectionState === 'connected'", 15)
        assert answered["ok"], (answered, caller.console())
        (call,) = list(gw.svc.registry)

        # the agent watches by session ID
        await watcher.open("/agent")
        w = await watcher.watch(sid, agent_token())
        print(f"\n[{colour}] watch: {w}")
        assert "exception" not in w, (w, watcher.console())
        assert w["sessionId"] == sid and w["state"] == "watching"
        assert w["tracksAtResolve"] == 0  # resolved on `watching`, before the answer and its media
        assert w["video"] is None or w["video"]["codec"] == "VP8", w

        seen = await caller.wait("X.watchers.includes(1)", 10)
        assert seen["ok"], seen
        first = await watcher.wait("X.video", 10)
        assert first["ok"], (first, watcher.console())
        assert first["value"] == {"width": WIDTH, "height": HEIGHT, "codec": "VP8"}, first

        # what the watcher decoded has the caller's colour
        pic = await watcher.colour()
        print(f"[{colour}] watcher decoded {pic}")
        assert (pic["width"], pic["height"]) == (WIDTH, HEIGHT), pic
        assert pic["framesDecoded"] >= 5 and pic["codec"] == "video/VP8", pic
        assert close_to(pic["samples"][-1], COLOURS[colour]), pic
        # and nothing else's: the other colour is far away
        other = next(c for c in ("red", "blue") if c != colour)
        assert not close_to(pic["samples"][-1], COLOURS[other]), pic

        # data both ways, in order, none lost (the watcher first: then its channel is up at the gateway)
        sent = await watcher.send("w", 100, BINARY)
        assert sent == {"sent": 101}, sent
        got = await caller.wait("X.data.length >= 101", 10)
        assert got["ok"], (got["harness"]["data"][-3:] if got["harness"]["data"] else got, caller.console())
        data = got["harness"]["data"]
        assert [m["data"] for m in data[:100]] == [f"w{i}" for i in range(100)]
        assert data[100]["data"] == {"bytes": list(BINARY)}  # binary stays binary
        assert {(m["label"], m["from"]) for m in data} == {("webgate", "agent")}
        sent = await caller.send("c", 100, BINARY)
        assert sent == {"sent": 101}, sent
        got = await watcher.wait("X.data.length >= 101", 10)
        assert got["ok"], (got["harness"]["data"][-3:] if got["harness"]["data"] else got, watcher.console())
        data = got["harness"]["data"]
        assert [m["data"] for m in data[:100]] == [f"c{i}" for i in range(100)]
        assert data[100]["data"] == {"bytes": list(BINARY)}
        assert {m["label"] for m in data} == {"webgate"}
        # nothing more arrives (no duplicates)
        more = await caller.wait("X.data.length > 101", 1)
        assert not more["ok"]
        # over 64 KiB: refused by webgate.js before it is sent
        big = await caller.send("x" * 65536, 1)
        assert big["code"] == "data_too_large", big

        # the call itself: echo still plays the caller's tone back
        m = await caller.measure()
        print(f"[{colour}] echo measured {[round(f['hz'], 1) for f in m['freqs']]} Hz")
        assert abs(measured_hz(m) - TONE_HZ) < 15, m

        # the gateway forwarded, relayed and counted; it decoded no video
        snap = call.hub.snapshot()
        print(f"[{colour}] hub: {snap}")
        video, relayed = snap["video"], snap["data"]
        assert (video["codec"], video["width"], video["height"], video["watchers"]) == ("VP8", WIDTH, HEIGHT, 1), snap
        assert video["packets_forwarded"] > 0 and video["keyframe_requests"] >= 1, snap
        assert (relayed["from_caller"], relayed["to_caller"]) == (101, 101), snap
        assert relayed["dropped_too_big"] == relayed["dropped_rate"] == 0, snap
        assert call.leg.stats.video_frames_decoded == 0

        # the watcher leaves: 0 -> 1 -> 0
        await watcher.action("close")
        gone = await caller.wait("X.watchers.length >= 3", 10)
        assert gone["harness"]["watchers"] == [0, 1, 0], gone
        assert call.hub.snapshot()["video"]["watchers"] == 0
        await caller.action("hangup")
        assert await released(gw)
    finally:
        await deferToThread(quit_chromium, drv, profile)
        await gw.stop()


# the demo page's controls and the agent console's, as a user would use them
DEMO_CALL = r"""
const done = arguments[arguments.length - 1];
document.getElementById('video').checked = true;
document.getElementById('data').checked = true;
document.getElementById('call').click();
(async () => {
  for (let i = 0; i < 200 && !/^\d+$/.test(document.getElementById('sid').textContent); i++) await new Promise((r) => setTimeout(r, 50));
  done(document.getElementById('sid').textContent);
})();
"""

TEXT = r"""
const [ids] = arguments;
const out = {};
for (const id of ids) { const el = document.getElementById(id); out[id] = el ? (el.value !== undefined && el.tagName === 'INPUT' ? el.value : el.textContent) : null; }
const v = document.getElementById('video');
out.videoWidth = v && v.videoWidth; out.videoHeight = v && v.videoHeight;
return out;
"""

TYPE = r"""
const [input, button, text] = arguments;
document.getElementById(input).value = text;
document.getElementById(button).click();
return document.getElementById(input).value;
"""


async def _until(drv: Any, ids: list[str], ok: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def check() -> bool:
        nonlocal state
        state = drv.execute_script(TEXT, ids)
        return bool(ok(state))

    for _ in range(int(timeout_s / 0.2)):
        if await deferToThread(check):
            return state
        await sleep(0.2)
    raise AssertionError(f"page never got there: {state}")


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_demo_page_and_agent_console(media: dict[str, str], watcher_browser: Any) -> None:
    gw = Gateway({"tokens": {"key": KEY}})
    drv, profile = await deferToThread(launch_chromium, media["wav"], media["0x20c040"])
    try:
        await deferToThread(drv.get, gw.http + "/")
        sid = await deferToThread(drv.execute_async_script, DEMO_CALL)
        assert sid.isdigit(), sid
        demo = await _until(drv, ["state", "watchers"], lambda s: s["state"] == "answered")
        assert demo["watchers"] == "0"

        token = agent_token()
        await deferToThread(watcher_browser.get, f"{gw.http}/agent?session={sid}&token={token}")
        agent = await deferToThread(watcher_browser.execute_script, TEXT, ["session", "token", "state"])
        assert (agent["session"], agent["token"], agent["state"]) == (sid, token, "idle")  # prefilled
        await deferToThread(watcher_browser.execute_script, "document.getElementById('watch').click()")
        agent = await _until(watcher_browser, ["state", "sid", "vinfo"], lambda s: s["videoWidth"] > 0 and "x" in s["vinfo"], 15)
        assert agent["state"] == "watching" and agent["sid"] == sid
        assert agent["vinfo"] == f"VP8 {WIDTH}x{HEIGHT}" and (agent["videoWidth"], agent["videoHeight"]) == (WIDTH, HEIGHT)
        await _until(drv, ["watchers"], lambda s: s["watchers"] == "1")

        # chat both ways through the two pages' boxes
        await deferToThread(watcher_browser.execute_script, TYPE, "msg", "send", "hello from the agent")
        await _until(drv, ["chat"], lambda s: "agent: hello from the agent" in s["chat"])
        await deferToThread(drv.execute_script, TYPE, "chat-msg", "chat-send", "hello from the caller")
        await _until(watcher_browser, ["chat"], lambda s: "caller: hello from the caller" in s["chat"])

        # the caller hangs up: the agent console shows the end
        await deferToThread(drv.execute_script, "document.getElementById('hangup').click()")
        agent = await _until(watcher_browser, ["state"], lambda s: s["state"].startswith("ended"))
        print(f"\nagent console after the caller hung up: {agent}")
        assert await released(gw)
    finally:
        await deferToThread(quit_chromium, drv, profile)
        await gw.stop()


def test_solid_y4m_is_the_colour(tmp_path: Path) -> None:
    """The caller's camera file really is the colour (so a wrong colour at the watcher is the gateway's)."""
    require_program("ffmpeg", "ffmpeg")
    y4m = solid_y4m(tmp_path / "red.y4m", "red", "64x48", seconds=0.2)
    raw = y4m.read_bytes()
    header, _, rest = raw.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 W64 H48")
    frame = rest.partition(b"\n")[2][: 64 * 48 * 3 // 2]
    y, u, v = frame[0], frame[64 * 48], frame[64 * 48 + 64 * 48 // 4]
    assert (abs(y - 81) <= 2, abs(u - 90) <= 2, abs(v - 240) <= 2) == (True, True, True), (y, u, v)


@pytest_twisted.ensureDeferred
async def test_agent_console_is_served_like_the_demo_page() -> None:
    from twisted.web.client import Agent, readBody

    from tests.calls.gw import reactor

    gw = Gateway()
    try:
        agent = Agent(reactor)
        for path in ("/agent", "/agent/", "/agent?session=4821736095&token=x"):
            r = await agent.request(b"GET", (gw.http + path).encode())
            body = await readBody(r)
            assert r.code == 200 and b"<title>webgate agent</title>" in body, path
            assert r.headers.getRawHeaders(b"content-type")[0].startswith(b"text/html")
            assert r.headers.getRawHeaders(b"cache-control") == [b"no-cache"]
        r = await agent.request(b"GET", (gw.http + "/agent/x").encode())
        await readBody(r)
        assert r.code == 404
        r = await agent.request(b"GET", (gw.http + "/").encode())
        body = await readBody(r)
        assert b'id="data"' in body and b'id="chat-send"' in body and b'id="watchers"' in body
    finally:
        await gw.stop()
