"""A re-INVITE that changes the codec of a packet-path call (payloads relayed untouched).

Browser (aiortc, PCMU) -> gateway -> SIPp UAS answering PCMU: the call takes the packet path
(browser and phone speak PCMU, nothing is decoded). SIPp then re-INVITEs offering only PCMA,
with its media moved to a socket of this test. The browser's codec stays PCMU (its own
negotiation), so the gateway must switch that call to the frame path (decode one law, encode
the other) instead of relaying PCMU payloads labelled PCMA. Checked on the wire both ways:
the A-law the test's socket receives holds the browser's 700 Hz tone (clean), and a 440 Hz
A-law tone sent from that socket reaches the browser as 440 Hz (clean).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.webrtc_client import Browser, Gateway, connect
from tests.calls.gw import process_exit, wait_for
from tests.interop import peers
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.codecs import create_encoder
from webgate.media.tones import ToneGenerator

BROWSER_HZ = 700.0
PHONE_HZ = 440.0


def purity(pcm: np.ndarray, rate: int, hz: float, width: float = 40.0) -> float:
    """Share of the signal's energy within +-width Hz of ``hz`` (a clean tone: > 0.8; the
    same tone through the wrong G.711 law: far less, its energy smeared into harmonics)."""
    x = pcm.astype(np.float64)
    x -= x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    band = (freqs > hz - width) & (freqs < hz + width)
    return float(spec[band].sum() / max(spec.sum(), 1e-12))


def far_end(sock: socket.socket, dest: tuple[str, int], seconds: float) -> list[bytes]:
    """Send a 440 Hz A-law tone (PT 8, 20 ms) to ``dest`` and collect what arrives, for ``seconds``."""
    enc = create_encoder("PCMA")
    gen = ToneGenerator(PHONE_HZ, 8000, 0.4)
    got: list[bytes] = []
    seq, ts, ssrc = 1, 0, 0x1234ABCD
    sock.settimeout(0.005)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        due = t0 + n * 0.02
        if time.monotonic() >= due:
            payloads = enc.encode(gen.generate(160))
            for p in payloads if isinstance(payloads, list) else [payloads]:
                sock.sendto(struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes(p), dest)
                seq += 1
                ts += 160
            n += 1
        try:
            got.append(sock.recvfrom(4096)[0])
        except (TimeoutError, BlockingIOError):
            pass
    return got


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_reinvite_to_pcma_switches_a_packet_path_call_to_frame(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sink = peers.RtpSink()  # its socket is where the re-INVITE moves SIPp's media
    sipp = sipp_factory("uas_reinvite_pcma", duration_ms=4000, rtp_echo=True, keys={"pcma_port": sink.port})
    gw = Gateway(
        {
            "trunk": [{"name": "sipp", "target": f"sip:127.0.0.1:{sipp.port}", "codecs": ["PCMU", "PCMA"]}],
            "route": [{"pattern": "1000", "trunk": "sipp", "public": True}],
        }
    )
    browser = Browser(tone_hz=BROWSER_HZ, codecs=["pcmu"])
    ws = None
    try:
        ws = await connect(gw.url)
        ws.send({"type": "call", "destination": "1000", "sdp": await browser.offer()})
        assert (await ws.next("accepted", 10))["codec"] == "PCMU"
        await browser.answer((await ws.next("answer", 10))["sdp"])
        await ws.next("progress", 10, state="answered")
        (call,) = list(gw.svc.registry)
        leg: Any = call.leg
        assert call.codec == "PCMU" and call.media_path == "packet", (call.codec, call.media_path)
        assert gw.manager.counters["packet_path"] == 1 and gw.manager.counters["frame_path"] == 0
        # packet path: SIPp echoes the browser's tone, relayed untouched both ways
        assert await wait_for(lambda: leg.stats.packets_relayed > 50 and browser.rate is not None, 10)

        # SIPp's re-INVITE: PCMA only
        assert await wait_for(lambda: call.codec == "PCMA", 15), sipp.describe()
        print(f"\n[re-INVITE] SIP codec {call.codec}, browser codec {leg.stats.browser_codec}, path {call.media_path}")
        assert call.media_path == "frame"
        assert leg.stats.transcoded is True and call.transcoded()
        assert gw.manager.counters == {**gw.manager.counters, "packet_path": 1, "frame_path": 1, "path_switches": 1}

        assert call.rtp is not None
        dest = ("127.0.0.1", call.rtp.rtp_port)
        n_before = len(browser.received)
        got = await deferToThread(far_end, sink.sock, dest, 3.0)
        pts = {p[1] & 0x7F for p in got if len(p) > 12}
        sent_by_gw = b"".join(p[12:] for p in got if len(p) > 12 and p[1] & 0x7F == 8)
        assert pts == {8}, pts
        to_phone = peers.alaw_decode(sent_by_gw)[-8000 * 2 :]
        f_phone, p_phone = dominant_frequency(to_phone, 8000), purity(to_phone, 8000, BROWSER_HZ)
        rate = browser.rate
        assert rate is not None
        to_browser = np.concatenate(browser.received[n_before:])[-rate * 2 :]
        f_browser, p_browser = dominant_frequency(to_browser, rate), purity(to_browser, rate, PHONE_HZ)
        print(
            f"[after switch] phone got {len(got)} packets (PT {sorted(pts)}): {f_phone:.1f} Hz, purity {p_phone:.2f}, "
            f"{rms_dbfs(to_phone):.1f} dBFS; browser got {f_browser:.1f} Hz, purity {p_browser:.2f}, {rms_dbfs(to_browser):.1f} dBFS"
        )
        assert abs(f_phone - BROWSER_HZ) < 15 and p_phone > 0.8 and rms_dbfs(to_phone) > -20
        assert abs(f_browser - PHONE_HZ) < 15 and p_browser > 0.8 and rms_dbfs(to_browser) > -20

        ws.send({"type": "hangup"})
        await ws.next("ended", 10, cause="client_hangup")
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
    finally:
        if ws is not None:
            ws.close()
        await browser.close()
        await gw.stop()
        sink.sock.close()
