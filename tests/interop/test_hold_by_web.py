"""Hold/resume from the web side as a real SIP re-INVITE: a Flash RPC client's ``hold(true)`` /
``hold(false)`` against a SIPp UAS that checks the gateway's offers (a=sendonly, then a=sendrecv),
answers them (a=recvonly, a=sendrecv) and expects the ACKs and the final BYE."""

from __future__ import annotations

import re
from typing import Callable

import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, flash_client, send_nellymoser
from tests.adapters.webrtc_client import Browser, close_all, complete_call, connect
from tests.adapters.webrtc_client import Gateway as WsGateway
from tests.calls.gw import process_exit, sleep, wait_for
from tests.interop import peers
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.ops.api import call_view


def _origin(body: str) -> tuple[str, int]:
    m = re.search(r"^o=\S+ (\d+) (\d+) ", body, re.M)
    assert m, body
    return m.group(1), int(m.group(2))


@pytest_twisted.ensureDeferred
async def test_flash_hold_and_resume_reach_the_pbx_as_reinvites(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_hold_by_uac", rtp_echo=True)
    gw = Gateway(_pbx(sipp))
    try:
        c = await flash_client(gw.rtmp_port, "alice", "alice", "", "")
        mic = await c.create_stream()
        c.command("publish", "local", "live", stream_id=mic)
        await c.status(mic, "NetStream.Publish.Start")

        res = await c.reply(c.command("hold", True))
        assert res.name == "_error" and res.args[0]["reason"] == "no_call"  # nothing to hold yet

        res = await c.reply(c.command("invite", "2000"))
        assert res.name == "_result", res
        await c.callback("accepted")
        call = gw.manager.registry.by_session_id(res.args[0])
        assert call is not None and call.state is CallState.ANSWERED
        stream = call.stream

        await send_nellymoser(c, mic, 0.6, 800.0)
        sent_before = stream.sender.packet_count
        assert sent_before > 10, "audio flows toward SIP before the hold"

        res = await c.reply(c.command("hold", True), timeout=10)
        assert res.name == "_result" and res.args[0] is True, res
        assert call.held and not stream.can_send
        assert call_view(call)["held"] is True  # what /api shows
        n = stream.sender.packet_count
        await send_nellymoser(c, mic, 0.6, 800.0)
        await sleep(0.2)
        assert stream.sender.packet_count == n, "RTP kept flowing toward SIP on hold"

        res = await c.reply(c.command("hold", False), timeout=10)
        assert res.name == "_result" and res.args[0] is False, res
        assert not call.held and stream.can_send
        assert call_view(call)["held"] is False
        await send_nellymoser(c, mic, 0.6, 800.0)
        assert await wait_for(lambda: stream.sender.packet_count > n + 10, 5), "no audio toward SIP after resume"

        res = await c.reply(c.command("bye"))
        assert res.name == "_result"
        assert await process_exit(sipp.proc, 20) == 0, sipp.describe()

        reqs: list[peers.SipMessage] = []
        for m in sipp.received():  # UDP retransmissions dropped (same CSeq and method)
            if m.method and all(m.header("CSeq") != r.header("CSeq") for r in reqs):
                reqs.append(m)
        assert [m.method for m in reqs] == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"], reqs
        invites = [m for m in reqs if m.method == "INVITE"]
        assert "a=sendonly" in invites[1].body and "a=sendrecv" in invites[2].body
        (sid0, v0), (sid1, v1), (sid2, v2) = (_origin(m.body) for m in invites)
        assert sid0 == sid1 == sid2, "the o= session ID is kept"
        assert (v1, v2) == (v0 + 1, v0 + 2), "the o= version goes up by one per offer"
        cseqs = [int((m.header("CSeq") or "0").split()[0]) for m in reqs]
        assert cseqs == [1, 1, 2, 2, 3, 3, 4], cseqs  # each ACK carries its INVITE's CSeq; BYE comes next
        assert invites[1].header("To") and ";tag=" in (invites[1].header("To") or ""), "a re-INVITE is in the dialog"
    finally:
        await gw.stop()


def _pbx(sipp: peers.Sipp) -> dict[str, object]:
    return {
        "trunk": [{"name": "pbx", "target": f"sip:{sipp.address}"}],
        "route": [{"pattern": r"\d{3,15}", "trunk": "pbx", "public": True}],
    }


@pytest_twisted.ensureDeferred
async def test_websocket_hold_silences_the_echo_and_resume_brings_it_back(sipp_factory: Callable[..., peers.Sipp]) -> None:
    """The browser's tone goes to SIPp, which echoes it back: while held the gateway sends SIPp
    nothing, so the browser hears nothing; after the resume it hears its tone again."""
    sipp = sipp_factory("uas_hold_by_uac", rtp_echo=True)
    gw = WsGateway(_pbx(sipp))
    browser = Browser(tone_hz=700.0)
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        ws.send({"type": "hold", "on": True})
        assert (await ws.next("error", ref="hold"))["code"] == "no_call"
        await complete_call(ws, browser, {"type": "call", "destination": "2000"})
        freq, level = await browser.heard(1.5)
        print(f"\nbefore hold: {freq:.1f} Hz, {level:.1f} dBFS")
        assert abs(freq - 700.0) < 15 and level > -30, (freq, level)

        n = len(ws.messages)
        ws.send({"type": "hold", "on": "yes"})
        assert (await ws.next("error", after=n, ref="hold"))["code"] == "bad_message"
        ws.send({"type": "hold", "on": True})
        ws.send({"type": "hold", "on": False})  # while the first is pending
        assert (await ws.next("error", after=n, code="hold_pending"))["ref"] == "hold"
        await ws.next("progress", after=n, state="held", timeout=10)
        (call,) = list(gw.svc.registry)
        assert call.held and call.state.value == "answered"
        await sleep(0.4)  # the echo of what was in flight
        start = len(browser.recording())
        await sleep(1.0)
        during = browser.recording()[start:]
        level_held = rms_dbfs(during) if len(during) else -120.0
        print(f"on hold: {len(during)} samples, {level_held:.1f} dBFS")
        assert level_held < -45, level_held

        n = len(ws.messages)
        ws.send({"type": "hold", "on": False})
        await ws.next("progress", after=n, state="resumed", timeout=10)
        assert not call.held
        start = len(browser.recording())
        assert await wait_for(lambda: browser.rate is not None and len(browser.recording()) - start > browser.rate, 8)
        tail = browser.recording()[-browser.rate // 2:]  # type: ignore[operator]
        freq, level = dominant_frequency(tail, browser.rate), rms_dbfs(tail)
        print(f"resumed: {freq:.1f} Hz, {level:.1f} dBFS")
        assert abs(freq - 700.0) < 15 and level > -30, (freq, level)

        ws.send({"type": "hangup"})
        assert await process_exit(sipp.proc, 20) == 0, sipp.describe()
    finally:
        await close_all(gw, browser, ws)


@pytest_twisted.ensureDeferred
async def test_websocket_hold_refused_with_488_keeps_the_call_and_its_audio(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_hold_refused", rtp_echo=True)
    gw = WsGateway(_pbx(sipp))
    browser = Browser(tone_hz=900.0)
    ws = None
    try:
        ws = await connect(gw.url)
        await ws.next("welcome")
        await complete_call(ws, browser, {"type": "call", "destination": "2001"})
        await browser.heard(1.0)
        n = len(ws.messages)
        ws.send({"type": "hold", "on": True})
        err = await ws.next("error", after=n, ref="hold", timeout=10)
        assert (err["code"], err["status"], err["held"]) == ("hold_failed", 488, False), err
        (call,) = list(gw.svc.registry)
        assert not call.held and call.state.value == "answered"
        start = len(browser.recording())
        assert await wait_for(lambda: browser.rate is not None and len(browser.recording()) - start > browser.rate, 8)
        tail = browser.recording()[-browser.rate // 2:]  # type: ignore[operator]
        freq, level = dominant_frequency(tail, browser.rate), rms_dbfs(tail)
        print(f"\nafter the refused hold: {freq:.1f} Hz, {level:.1f} dBFS")
        assert abs(freq - 900.0) < 15 and level > -30, (freq, level)
        assert not ws.of_type("ended")
        ws.send({"type": "hangup"})
        assert await process_exit(sipp.proc, 20) == 0, sipp.describe()
    finally:
        await close_all(gw, browser, ws)
