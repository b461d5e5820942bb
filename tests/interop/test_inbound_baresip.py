"""baresip as the PBX/phone calling a registered web user: sip:alice@gateway.

(a) python-librtmp as the Flash RPC client registered as alice (call token with ``sub: alice`` as
    the connect's second argument): ``invited``, ``accept()``, audio both ways (what baresip heard
    from the client's µ-law 800 Hz; what a second librtmp connection playing ``session/ID`` with
    alice's token got from baresip's 440 Hz), ``byed`` when baresip hangs up, ``reject`` -> 486 at
    baresip, baresip giving up before the answer -> ``cancelled``;
(b) aiortc over /ws registered as alice: ``invited``, ``accept`` with the browser's offer, audio
    measured both ways;
(c) an unregistered user -> 404, a gateway whose ``[sip] inbound_from`` excludes loopback -> 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.rtmp_helpers import Gateway as RtmpGateway
from tests.adapters.webrtc_client import Browser, close_all, complete_call, connect
from tests.adapters.webrtc_client import Gateway as WsGateway
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.conftest import tone_baresip
from tests.interop.test_rtmp_librtmp import LibrtmpClient, rpc_url
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs
from webgate.media.codecs import ulaw_decode
from webgate.proto.flv import TAG_AUDIO, read_flv
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"
CLIENT_HZ = 800.0
BROWSER_HZ = 700.0
BARESIP_HZ = 440.0


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[peers.Baresip]:
    with tone_baresip(tmp_path, BARESIP_HZ) as b:
        yield b


def _extra(port: int, **sip: Any) -> dict[str, Any]:
    return {"sip": {"udp": f"127.0.0.1:{port}", **sip}, "tokens": {"key": KEY}}


def _heard(bob: peers.Baresip, before: set[Path], start: float, seconds: float) -> tuple[float, float]:
    wav = bob.recorded_wav("dec")
    assert wav is not None and wav not in before, "baresip recorded nothing new"
    x, rate = read_wav(wav)
    seg = x[int(rate * start): int(rate * (start + seconds))]
    assert len(seg) > rate * seconds * 0.8, f"baresip recorded only {len(x) / rate:.2f} s"
    return dominant_frequency(seg, rate), rms_dbfs(seg)


async def _closed_status(bob: peers.Baresip, timeout: float = 10.0) -> str:
    ev = await deferToThread(bob.wait_event, "CALL_CLOSED", timeout)
    return str(ev.get("param", ""))


@pytest_twisted.ensureDeferred
async def test_baresip_calls_librtmp_flash_client(bob: peers.Baresip, tmp_path: Path) -> None:
    port = peers.free_port("udp")
    gw = RtmpGateway(_extra(port))
    token = mint_token(KEY, sub="alice")
    client = LibrtmpClient({
        "url": rpc_url(gw.rtmp_port, "alice", "alice", token, "Alice"),
        "publish": True,
        "steps": [
            {"do": "wait", "name": "invited", "timeout": 30},
            {"do": "call", "method": "accept"},
            {"do": "wait", "name": "accepted"},
            {"do": "audio", "seconds": 5.0, "hz": CLIENT_HZ, "codec": "pcmu"},
            {"do": "wait", "name": "byed", "timeout": 20},
            {"do": "wait", "name": "invited", "timeout": 30},
            {"do": "call", "method": "reject", "args": ["busy"]},
            {"do": "wait", "name": "invited", "timeout": 30},
            {"do": "wait", "name": "cancelled", "timeout": 30},
        ],
    }, timeout=120)
    try:
        # (the ``registered`` callback arrives while librtmp's own connect/publish loop runs, which
        # swallows it; tests/adapters/test_inbound_rtmp.py checks it)
        await client.wait(event="publishing")
        assert await wait_for(lambda: gw.manager.web_users.lookup("alice") is not None, 5)
        before = set(bob.rec_dir.glob("dump-*-dec.wav"))

        # call 1: accepted, audio both ways, baresip hangs up
        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{port}")
        inv = await client.wait(event="waited", name="invited")
        frm, to = inv["args"]
        assert "bob@127.0.0.1" in frm and to.startswith("<sip:alice@"), inv
        sid_ev = await client.wait(event="invoke", name="sessionId")
        sid = sid_ev["args"][0]
        acc = await client.wait(timeout=10, event="reply", method="accept")
        assert acc["name"] == "_result" and acc["args"] == [sid], acc
        await client.wait(event="waited", name="accepted")
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)
        call = gw.manager.registry.by_session_id(sid)
        assert call is not None and call.direction == "inbound" and call.state is CallState.ANSWERED
        assert call.codec == "PCMU" and call.media_path == "packet" and call.identity == "alice"

        # what the client receives: a second librtmp connection plays session/ID with alice's token
        flv_path = tmp_path / "played.flv"
        player = LibrtmpClient({
            "url": f"rtmp://127.0.0.1:{gw.rtmp_port}/session/{sid}?codec=pcmu&token={token} live=1 timeout=2",
            "play_seconds": 3.0, "flv_out": str(flv_path), "steps": [],
        })
        played = await player.wait(timeout=15, event="played")
        assert played["bytes"] > 10000, player.describe()
        await player.finish()
        _, tags = read_flv(flv_path.read_bytes())
        import numpy as np

        pcm = np.concatenate([ulaw_decode(t.data[1:]) for t in tags if t.tag_type == TAG_AUDIO and t.data[0] >> 4 == 8])
        tail = pcm[len(pcm) // 3:]
        got = dominant_frequency(tail, 8000)
        print(f"\nbaresip -> librtmp (session/ID play, PCMU): {got:.1f} Hz at {rms_dbfs(tail):.1f} dBFS")
        assert abs(got - BARESIP_HZ) < 20, got
        assert rms_dbfs(tail) > -35

        await client.wait(timeout=20, event="audio_sent")
        await deferToThread(bob.hangup)
        await client.wait(timeout=10, event="waited", name="byed")
        await _closed_status(bob)
        assert await wait_for(lambda: call.ended, 5)
        assert call.end_cause == "remote_hangup"
        f, level = _heard(bob, before, 1.0, 3.0)
        print(f"librtmp (PCMU 800 Hz) -> baresip heard {f:.1f} Hz at {level:.1f} dBFS")
        assert abs(f - CLIENT_HZ) < 20, f
        assert level > -35, level

        # call 2: the client rejects -> 486 at baresip
        await sleep(0.5)
        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{port}")
        rej = await client.wait(timeout=15, event="reply", method="reject")
        assert rej["name"] == "_result", rej
        status = await _closed_status(bob)
        assert "486" in status, status

        # call 3: baresip gives up before the answer -> cancelled
        await sleep(0.5)
        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{port}")
        assert await wait_for(lambda: client.count(event="waited", name="invited") == 3, 15), client.describe()
        inbound = next(c for c in gw.manager.registry if c.direction == "inbound")
        await deferToThread(bob.hangup)
        await client.wait(timeout=10, event="waited", name="cancelled")
        await _closed_status(bob)
        assert await wait_for(lambda: inbound.ended, 5)
        assert inbound.end_cause == "cancelled"
        assert await client.finish() == 0, client.describe()
        # the connection closed: alice is no longer registered -> 404
        assert await wait_for(lambda: gw.manager.web_users.lookup("alice") is None, 10)
        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{port}")
        status = await _closed_status(bob)
        assert "404" in status, status
        assert await wait_for(lambda: len(gw.manager.registry) == 0, 5)
    finally:
        client.proc.kill()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_baresip_calls_browser_registered_over_websocket(bob: peers.Baresip) -> None:
    port = peers.free_port("udp")
    gw = WsGateway(_extra(port))
    browser = Browser(tone_hz=BROWSER_HZ)
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
        await ws.next("registered")
        before = set(bob.rec_dir.glob("dump-*-dec.wav"))
        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{port}")
        inv = await ws.next("invited", timeout=10)
        assert inv["from"] == "bob" and inv["to"] == "alice", inv
        assert (await complete_call(ws, browser, {"type": "accept", "call": inv["call"]}, timeout=10))["codec"] == "PCMU"
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)
        call = gw.manager.registry.by_session_id(inv["session_id"])
        assert call is not None and call.media_path == "packet"

        heard, level = await browser.heard(seconds=4, timeout=12, tail_s=2)
        print(f"\nbaresip (440 Hz) -> browser heard {heard:.1f} Hz at {level:.1f} dBFS")
        assert abs(heard - BARESIP_HZ) < 20, heard
        assert level > -35

        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        await _closed_status(bob)
        f, level = _heard(bob, before, 1.0, 2.0)
        print(f"browser (700 Hz) -> baresip heard {f:.1f} Hz at {level:.1f} dBFS")
        assert abs(f - BROWSER_HZ) < 20, f
        assert level > -35, level
        assert await wait_for(lambda: len(gw.manager.registry) == 0, 5)

        # an unregistered user -> 404
        await deferToThread(bob.dial, f"sip:carol@127.0.0.1:{port}")
        status = await _closed_status(bob)
        assert "404" in status, status
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_invite_from_outside_inbound_from_is_403(bob: peers.Baresip) -> None:
    port = peers.free_port("udp")
    gw = WsGateway(_extra(port, inbound_from=["192.0.2.0/24"]))
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "register", "user": "alice", "token": mint_token(KEY, sub="alice")})
        await ws.next("registered")
        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{port}")
        status = await _closed_status(bob)
        assert "403" in status, status
        assert not ws.of_type("invited")
        ws.close()
    finally:
        await gw.stop()
