"""The native relay's hand-over (webgate/adapters/native_relay.py): an aiortc caller's G.711 echo call
relayed in C both ways, taken back to Python and given to C again by DTMF, a recording tap and hold,
without a gap or a repeat in the sequence numbers the far end sees, and with the tone heard again
after each hand-over."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest_twisted

from tests.adapters.webrtc_client import Browser, Gateway, close_all, complete_call, connect
from tests.calls.gw import sleep, wait_for
from webgate.adapters import media_loop
from webgate.adapters.native_relay import CHECK_S
from webgate.legs.webrtc import WebRtcSettings


class _Tap:
    """A recording tap that only counts (webgate.media.stream.AudioTap)."""

    def __init__(self) -> None:
        self.n_sent = self.n_received = 0

    def sent(self, ssrc: int, timestamp: int, payload: bytes) -> None:
        self.n_sent += 1

    def received(self, ssrc: int, timestamp: int, payload: bytes) -> None:
        self.n_received += 1

    def sent_pcm(self, pcm: Any) -> None:
        pass

    def received_pcm(self, ssrc: int, timestamp: int, pcm: Any) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_native_relay_hands_over_without_a_gap() -> None:
    gw = Gateway({"rtp": {"media_io": "native"}}, settings=WebRtcSettings(direct_audio=True, allow_private_candidates=True))
    reader = gw.svc.rtp_pool.reader
    assert reader is not None and hasattr(reader, "set_rule")
    browser = Browser(tone_hz=700.0)
    ws = None
    try:
        ws = await connect(gw.url)
        await complete_call(ws, browser, {"type": "call", "destination": "echo"})
        (call,) = list(gw.svc.registry)
        leg = call.leg
        assert await wait_for(lambda: leg._direct is not None, 5)
        off = leg._direct.offload
        assert off is not None
        assert await wait_for(lambda: off.engaged == (True, True), 5), off.engaged
        measured, level = await browser.heard()
        assert abs(measured - 700.0) < 15 and level > -30
        (bc,) = list(gw.manager.builtin_calls.values())
        echo = bc.endpoint.stream  # the far end: what it receives is what C (or Python) sent
        stream = call.stream

        # DTMF toward SIP: Python sends the RFC 4733 events, so web -> SIP comes back to Python
        # first; the echo sends the digits back (SIP -> web: Python again); then C again
        back = off.taken_back
        ws.send({"type": "dtmf", "digits": "12"})
        assert await wait_for(lambda: echo.stats.dtmf_received >= 2, 5), echo.stats.dtmf_received
        assert off.taken_back >= back + 1
        assert await wait_for(lambda: off.engaged == (True, True), 3), off.engaged

        # a recording tap: both directions back to Python at once (the tap sees every packet)
        tap = _Tap()
        stream.recorder = tap
        assert off.engaged == (False, False)
        await sleep(0.6)
        assert tap.n_sent > 10 and tap.n_received > 10
        stream.recorder = None
        assert await wait_for(lambda: off.engaged == (True, True), 3 * CHECK_S + 1), off.engaged

        # so far the far end saw one sequence: nothing repeated, nothing skipped
        await sleep(0.3)
        rx = echo.rx_stats
        assert rx is not None and rx.bad_seq is None and rx.duplicates_or_late == 0, vars(rx)
        # (the RFC 4733 packets are counted in packets_received, not in the audio's rx_stats)
        expected = rx.extended_max_seq - rx.base_seq + 1
        assert 0 <= expected - echo.stats.packets_received <= 2, (expected, echo.stats.packets_received)

        # hold (the far end's SDP says sendonly): nothing may be sent toward SIP, by C or Python
        media = stream.media
        stream.configure(dataclasses.replace(media, on_hold=True))
        assert off.engaged[0] is False
        sent = stream.stats.packets_sent
        await sleep(0.5)
        assert stream.stats.packets_sent == sent
        stream.configure(media)
        assert await wait_for(lambda: off.engaged == (True, True), 3 * CHECK_S + 1), off.engaged

        # after the hold: still one sequence, nothing repeated (the held time's numbers were
        # taken by the packets Python did not send, as before the native relay)
        await sleep(1.0)
        assert rx.bad_seq is None and rx.duplicates_or_late == 0, vars(rx)
        # and the counters Python reports moved with the packets C relayed
        assert stream.stats.packets_sent > 100 and stream.stats.packets_received > 100
        assert stream.sender.packet_count >= stream.stats.packets_sent  # (+ those built but held back)
        assert leg.stats.packets_relayed > 100 and off.relayed > 100
        # the strict-source guard's last packet time is on the reactor's clock (relearn_after_s)
        off.sync()
        assert abs(stream.source_guard.last_rx - time.time()) < 1.0, (stream.source_guard.last_rx, time.time())
        assert stream.first_packet_at is not None and 0 < time.time() - stream.first_packet_at < 60
        measured, _ = await browser.heard()
        assert abs(measured - 700.0) < 15

        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert off.closed and off.engaged == (False, False) and not reader._rules
    finally:
        await close_all(gw, browser, ws)
        media_loop.set_default_mode("loop", 0)
