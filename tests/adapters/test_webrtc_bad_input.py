"""Bad input on /ws: each gets a clear error with a stable code; a live call on another
connection is not disturbed and the gateway keeps serving."""

from __future__ import annotations

import json

import pytest_twisted

from tests.adapters.webrtc_client import Browser, Gateway, connect
from tests.calls.gw import sleep, wait_for
from webgate.legs.webrtc import WebRtcSettings

SETTINGS = WebRtcSettings(max_message_size=4096, max_errors=40, allow_private_candidates=True)


@pytest_twisted.ensureDeferred
async def test_bad_input_gets_stable_codes_and_disturbs_nobody() -> None:
    gw = Gateway(settings=SETTINGS)
    live = Browser(tone_hz=700.0)
    probe = Browser(tone_hz=500.0)
    try:
        # a live call on its own connection
        ws_live = await connect(gw.url)
        ws_live.send({"type": "call", "destination": "echo", "sdp": await live.offer()})
        await live.answer((await ws_live.next("answer"))["sdp"])
        await ws_live.next("progress", state="answered")
        (live_call,) = list(gw.svc.registry)
        assert await wait_for(lambda: len(live.received) > 20, 5)

        ws = await connect(gw.url)
        await ws.next("welcome")
        valid_sdp = await probe.offer()

        async def expect(msg: object, code: str) -> dict:
            n = len(ws.messages)
            if isinstance(msg, bytes):
                ws.transport.sendBytesMessage(msg)
            else:
                ws.send(msg if isinstance(msg, str) else json.dumps(msg))
            err = await ws.next("error", after=n)
            assert err["code"] == code, (msg, err)
            assert err["message"]
            return err

        await expect("this is not json", "bad_json")
        await expect("{\"type\": ", "bad_json")
        await expect("[1, 2, 3]", "bad_message")
        await expect({"no": "type"}, "bad_message")
        await expect({"type": 42}, "bad_message")
        await expect(b"\x00\x01binary", "bad_message")
        err = await expect({"type": "subscribe"}, "unknown_type")
        assert err["ref"] == "subscribe"
        await expect({"type": "ping", "pad": "x" * 5000}, "message_too_large")
        await expect({"type": "dtmf", "digits": "12"}, "no_call")
        await expect({"type": "hangup"}, "no_call")
        await expect({"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}, "no_call")
        await expect({"type": "candidate", "candidate": 5}, "invalid_candidate")
        await expect({"type": "call", "destination": "echo"}, "invalid_sdp")
        await expect({"type": "call", "destination": "echo", "sdp": 12}, "invalid_sdp")
        await expect({"type": "call", "destination": "echo", "sdp": "v=0\r\nthis is not sdp\r\n"}, "invalid_sdp")
        await expect({"type": "call", "destination": "echo", "sdp": "garbage"}, "invalid_sdp")
        await expect({"type": "call", "destination": "echo\r\nX-Evil: 1", "sdp": valid_sdp}, "invalid_destination")
        await expect({"type": "call", "destination": "echo\n", "sdp": valid_sdp}, "invalid_destination")
        await expect({"type": "call", "destination": "sip:echo@evil;transport=tcp", "sdp": valid_sdp}, "invalid_destination")
        await expect({"type": "call", "destination": 123, "sdp": valid_sdp}, "invalid_destination")
        await expect({"type": "call", "destination": "+4930123456", "sdp": valid_sdp}, "destination_not_allowed")
        await expect({"type": "call", "destination": "echo", "sdp": valid_sdp, "display_name": "Eve\r\nX-Evil: 1"}, "invalid_display_name")
        await expect({"type": "call", "destination": "echo", "sdp": valid_sdp, "session_id": "12ab"}, "invalid_session_id")
        await expect({"type": "call", "destination": "echo", "sdp": valid_sdp, "session_id": live_call.session_id}, "session_id_in_use")
        # nothing leaked: only the live call and its built-in far end hold media ports
        assert list(gw.svc.registry) == [live_call]
        assert len(gw.svc.rtp_pool.in_use) == 2
        # the connection still works
        ws.send({"type": "ping", "id": "still-here"})
        assert (await ws.next("pong"))["id"] == "still-here"

        # a message streamed far beyond the limit is cut off (close 1009), not buffered
        ws_big = await connect(gw.url)
        await ws_big.next("welcome")
        ws_big.send(json.dumps({"type": "ping", "pad": "y" * 200_000}))
        await ws_big.closed
        assert ws_big.of_type("error") and ws_big.of_type("error")[0]["code"] == "message_too_large"

        # a client that keeps sending garbage is disconnected
        ws_noisy = await connect(gw.url)
        await ws_noisy.next("welcome")
        for _ in range(SETTINGS.max_errors + 2):
            ws_noisy.send("{")
        await ws_noisy.closed
        assert ws_noisy.of_type("error")[-1]["code"] == "too_many_errors"

        # the live call was never disturbed: still answered, audio still arriving
        before = len(live.received)
        await sleep(0.5)
        assert not live_call.ended and live_call.state.value == "answered"
        assert len(live.received) > before + 10
        assert not ws_live.of_type("error") and not ws_live.of_type("ended")

        # and the gateway still places new calls (a custom session ID is honoured)
        sid = "55512345"
        ws.send({"type": "call", "destination": "echo", "sdp": valid_sdp, "session_id": sid, "display_name": "Alice Example"})
        assert (await ws.next("accepted"))["session_id"] == sid
        await probe.answer((await ws.next("answer"))["sdp"])
        await ws.next("progress", state="answered")
        n = len(ws.messages)
        await expect({"type": "call", "destination": "echo", "sdp": valid_sdp}, "call_in_progress")
        await expect({"type": "dtmf", "digits": "12x"}, "invalid_dtmf")
        await expect({"type": "dtmf", "digits": "1", "duration_ms": 99999}, "invalid_dtmf")
        assert ws.messages[n:] and len(gw.svc.registry) == 2
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        ws_live.send({"type": "hangup"})
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and not gw.svc.rtp_pool.in_use, 5)
    finally:
        await live.close()
        await probe.close()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_plain_http_get_on_ws_is_refused_and_static_files_served() -> None:
    from twisted.web.client import Agent, readBody

    from tests.calls.gw import reactor

    gw = Gateway()
    try:
        agent = Agent(reactor)
        r = await agent.request(b"GET", (gw.url.replace("ws://", "http://")).encode())
        await readBody(r)
        assert r.code == 400
        r = await agent.request(b"GET", (gw.http + "/html5_client/webgate.js").encode())
        body = await readBody(r)
        assert r.code == 200 and b"export class WebGate" in body
        assert r.headers.getRawHeaders(b"content-type")[0].startswith(b"text/javascript")
        r = await agent.request(b"GET", (gw.http + "/").encode())
        assert b"webgate demo" in await readBody(r)
        r = await agent.request(b"GET", (gw.http + "/html5_client/").encode())
        await readBody(r)
        assert r.code == 404  # no directory listing
        r = await agent.request(b"GET", (gw.http + "/html5_client/../webgate/config/__init__.py").encode())
        await readBody(r)
        assert r.code == 404
    finally:
        await gw.stop()
