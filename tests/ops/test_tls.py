"""HTTPS/WSS and RTMPS listeners from config ([http] tls_listen, [rtmp] tls_listen), with a
self-signed certificate made in the test: HTTPS /health and /api, a WebRTC call to echo over
WSS (aiortc client, tone measured), ffmpeg publishing and playing over rtmps:// (tone measured)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import ssl
from twisted.web.client import BrowserLikePolicyForHTTPS

from tests.adapters.rtmp_helpers import ffmpeg
from tests.adapters.webrtc_client import Browser, close_all, complete_call, connect
from tests.ops.helpers import (
    ADMIN_KEY,
    http,
    self_signed,
    sleep,
    start_gateway,
    wait_for,
)
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs


def tls_gateway(tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    cert, key, pem = self_signed(tmp_path)
    gw = start_gateway(
        {
            "http": {"tls_listen": "127.0.0.1:0", "tls_cert": str(cert), "tls_key": str(key)},
            "rtmp": {"listen": "", "tls_listen": "127.0.0.1:0", "tls_cert": str(cert), "tls_key": str(key)},
            **extra,
        }
    )
    return gw, ssl.Certificate.loadPEM(pem)


@pytest_twisted.ensureDeferred
async def test_https_and_wss_call(tmp_path: Path) -> None:
    gw, trust = tls_gateway(tmp_path)
    browser = Browser(tone_hz=700.0)
    ws = None
    try:
        https = gw.base("https", "https")
        status, _h, body = await http("GET", https + "/health", trust=trust)
        assert status == 200 and b'"status":"ok"' in body
        status, _h, body = await http("GET", https + "/api/stats", key=ADMIN_KEY, trust=trust)
        assert status == 200
        # an untrusted client refuses our self-signed certificate: it really is TLS
        with pytest.raises(Exception):  # noqa: B017 - whatever TLS error twisted wraps it in
            await http("GET", https + "/health")
        # WSS: the same /ws over TLS, a whole call to echo
        wss = https.replace("https://", "wss://") + "/ws"
        ws = await connect(wss, BrowserLikePolicyForHTTPS(trustRoot=trust))
        await ws.next("welcome")
        await complete_call(ws, browser, {"type": "call", "destination": "echo"})
        f, level = await browser.heard(timeout=10)
        print(f"\nWSS call: echo measured {f:.1f} Hz at {level:.1f} dBFS")
        assert abs(f - 700.0) < 15 and level > -30
        (call,) = list(gw.svc.registry)
        assert call.ingress_kind == "webrtc"
    finally:
        await close_all(gw, browser, ws)


@pytest.mark.usefixtures("ffmpeg_program")
@pytest_twisted.ensureDeferred
async def test_rtmps_publish_and_play(tmp_path: Path) -> None:
    gw, _trust = tls_gateway(tmp_path)
    try:
        assert gw.gw.listening_address("rtmp") is None
        url = gw.base("rtmps", "rtmps") + "/call/echo"
        pub = ffmpeg(
            "-re", "-f", "lavfi", "-i", "sine=frequency=800:sample_rate=44100:duration=7",
            "-c:a", "pcm_mulaw", "-ar", "8000", "-f", "flv", url, timeout=30,
        )  # fmt: skip
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), "no call over RTMPS"
        (call,) = list(gw.svc.registry)
        assert call.ingress_kind == "rtmp"
        await sleep(0.5)
        wav = tmp_path / "back.wav"
        player = ffmpeg("-i", url, "-map", "0:a", "-t", "3", "-ac", "1", "-y", str(wav), timeout=25)
        code, _out, err = await player.wait()
        assert code == 0, err.decode(errors="replace")
        pcm, rate = read_wav(wav)
        tail = pcm[len(pcm) // 3 :]
        f, level = dominant_frequency(tail, rate), rms_dbfs(tail)
        print(f"\nRTMPS: published 800 Hz, played back {f:.1f} Hz at {level:.1f} dBFS")
        assert abs(f - 800.0) < 15 and level > -35
        code, _out, err = await pub.wait()
        assert code == 0, err.decode(errors="replace")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await gw.stop()
