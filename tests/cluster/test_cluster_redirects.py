"""Redirects across a cluster (issue 15): two whole gateways, nodes "a" and "b" of one cluster
on a private redis-server, each with HTTP (``/ws``) and RTMP listeners.

- A WebSocket ``watch`` of a call that lives on A, sent to B, is answered
  ``{"type": "redirect", "url": A's ws_url, ...}``; an aiortc watcher that follows it (a new
  WebSocket to that URL, the same ``watch`` again) watches the caller's video there (decoded
  frames of the caller's colour). Without a token allowing the watch, B answers ``not_found``,
  as for an unknown session ID: the redirect tells a prober nothing a refusal would not.
- An RTMP play of ``session/ID`` of an RTMP call on A, sent to B, gets
  ``NetStream.Play.Failed`` with ``redirect`` = A's ``rtmp_url`` + ``/session/ID``; ffmpeg
  playing that URL hears the publisher's tone. ``watch/ID`` redirects too (with a token), and an
  unknown ID stays ``StreamNotFound``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import RtmpClient, ffmpeg, open_client
from tests.adapters.test_webrtc_watch import (
    COLOURS,
    Caller,
    Watcher,
    agent_token,
    close_to,
)
from tests.adapters.webrtc_client import complete_call, connect
from tests.calls.gw import rtp_range, sleep, wait_for
from tests.cluster.conftest import RedisServer
from tests.ops.helpers import RunningGateway, gateway_config
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"  # the key of tests/adapters/test_webrtc_watch.py
TONE_HZ = 800.0


def node_config(server: RedisServer, node_id: str) -> Any:
    lo, hi = rtp_range(200)
    return gateway_config({
        "cluster": {"enabled": True, "redis_url": server.url, "node_id": node_id, "heartbeat_s": 0.25,
                    "node_ttl_s": 1.5},
        "rtmp": {"listen": "127.0.0.1:0"},
        "rtp": {"port_min": lo, "port_max": hi},
        "tokens": {"key": KEY},
    })


@asynccontextmanager
async def two_nodes(server: RedisServer) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    a = RunningGateway(node_config(server, "a"))
    b = RunningGateway(node_config(server, "b"))
    try:
        assert await wait_for(lambda: a.gw.cluster.node.available and b.gw.cluster.node.available, 5)
        assert await wait_for(lambda: a.gw.cluster.node.pooled > 0 and b.gw.cluster.node.pooled > 0, 5)
        yield a, b
    finally:
        await a.stop()
        await b.stop()


def ws_url(gw: RunningGateway) -> str:
    return gw.url("/ws").replace("http://", "ws://")


def rtmp_url(gw: RunningGateway) -> str:
    return gw.base("rtmp", "rtmp")


async def watch_at(url: str, session_id: str, token: str | None) -> dict[str, Any]:
    """Send one ``watch`` (the offer of a throwaway watcher) to ``url``: its first answer."""
    w = Watcher()
    try:
        ws = w.ws = await connect(url)
        await ws.next("welcome")
        msg: dict[str, Any] = {"type": "watch", "session_id": session_id, "sdp": await w.offer()}
        if token is not None:
            msg["token"] = token
        ws.send(msg)
        assert await wait_for(lambda: any(m["type"] in ("redirect", "error", "watching") for m in ws.messages), 8), ws.messages
        return next(m for m in ws.messages if m["type"] in ("redirect", "error", "watching"))
    finally:
        await w.close()


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_a_websocket_watch_at_the_wrong_node_is_redirected_and_followed(redis_server: RedisServer) -> None:
    async with two_nodes(redis_server) as (a, b):
        caller, watcher, ws = Caller(COLOURS["blue"]), Watcher(), None
        try:
            ws = await connect(ws_url(a))
            await complete_call(ws, caller, {"type": "call", "destination": "echo"})
            (call,) = list(a.gw.registry)
            sid = call.session_id
            assert await wait_for(lambda: call.hub is not None and (call.hub.stats.width or 0) > 0, 10), "no caller video"
            await sleep(0.3)  # the index write

            # B: the call is A's; a token that may watch it gets the redirect
            redirect = await watch_at(ws_url(b), sid, agent_token())
            assert redirect == {"type": "redirect", "ref": "watch", "url": ws_url(a), "session_id": sid, "node": "a"}
            # the same sub as the placer's token may too (none here: the call had no token), a
            # token for another call, none, an unknown ID: the one not_found of one process
            for token, target in ((mint_token(KEY, sub="x", watch="1234567890"), sid), (None, sid),
                                  (agent_token(), "1234567890")):
                answer = await watch_at(ws_url(b), target, token)
                assert answer["type"] == "error" and answer["code"] == "not_found", answer
            assert a.gw.cluster.node.available  # (nothing above was a Redis failure)

            # an aiortc watcher following it: the same watch, at A, decodes the caller's video
            watching = await watcher.watch(redirect["url"], sid, agent_token())
            assert watching["type"] == "watching" and watching["session_id"] == sid, watching
            assert await wait_for(lambda: watcher.frames > 10, 15), watcher.frames
            assert await wait_for(lambda: close_to(watcher.rgb, COLOURS["blue"]), 5), watcher.rgb
            assert len(call.hub.watchers) == 1
        finally:
            await watcher.close()
            if ws is not None:
                ws.close()
            await caller.close()
        assert await wait_for(lambda: len(a.gw.registry) == 0, 5)


async def play(port: int, app: str, name: str, token: str | None = None) -> dict[str, Any]:
    """Play ``app``/``name`` on a new scripted RTMP connection: the final onStatus info."""
    c: RtmpClient = await open_client(port)
    try:
        await c.connect(app, port=port)
        stream = await c.create_stream()
        c.command("play", name + (f"?token={token}" if token else ""), stream_id=stream)
        final = ("NetStream.Play.Start", "NetStream.Play.StreamNotFound", "NetStream.Play.Failed")
        assert await wait_for(lambda: any(s.get("code") in final for s in c.statuses(stream)), 8), c.statuses(stream)
        return next(s for s in c.statuses(stream) if s.get("code") in final)
    finally:
        c.transport.loseConnection()


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("ffmpeg_program")
@pytest_twisted.ensureDeferred
async def test_an_rtmp_play_at_the_wrong_node_is_redirected_and_ffmpeg_plays_there(
        redis_server: RedisServer, tmp_path: Path) -> None:
    async with two_nodes(redis_server) as (a, b):
        pub = ffmpeg("-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=44100:duration=12",
                     "-c:a", "pcm_mulaw", "-ar", "8000", "-f", "flv", rtmp_url(a) + "/call/echo", timeout=40)
        try:
            assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in a.gw.registry), 10), "no call on A"
            sid = next(iter(a.gw.registry)).session_id
            await sleep(0.3)  # the index write
            b_port = int(rtmp_url(b).rsplit(":", 1)[1])

            redirect = await play(b_port, "session", sid)
            assert redirect["code"] == "NetStream.Play.Failed", redirect
            assert redirect["redirect"] == f"{rtmp_url(a)}/session/{sid}" and redirect["node"] == "a", redirect
            # watch/ID redirects with a token that may watch; an unknown ID is StreamNotFound
            token = agent_token()  # one token: two made a second apart differ (iat, exp)
            info = await play(b_port, "watch", sid, token)
            assert info["code"] == "NetStream.Play.Failed"
            assert info["redirect"] == f"{rtmp_url(a)}/watch/{sid}?token={token}", info
            assert (await play(b_port, "watch", sid))["code"] == "NetStream.Play.StreamNotFound"
            assert (await play(b_port, "session", "1234567890"))["code"] == "NetStream.Play.StreamNotFound"

            # ffmpeg plays the documented URL it was given: the publisher's tone, echoed on A
            wav = tmp_path / "redirected.wav"
            player = ffmpeg("-i", redirect["redirect"], "-map", "0:a", "-t", "2.5", "-ac", "1", "-y", str(wav), timeout=30)
            code, _out, err = await player.wait()
            assert code == 0, err.decode(errors="replace")
            pcm, rate = read_wav(wav)
            tail = pcm[len(pcm) // 3:]
            assert abs(dominant_frequency(tail, rate) - TONE_HZ) < 15 and rms_dbfs(tail) > -35
        finally:
            pub.kill()
            await pub.wait()
        assert await wait_for(lambda: len(a.gw.registry) == 0, 5)
