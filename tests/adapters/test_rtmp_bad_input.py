"""Bad input on one RTMP connection gets an _error/onStatus and a clean close, and disturbs nobody."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest_twisted

from tests.adapters.rtmp_helpers import Gateway, LogFailures, RtmpClient, open_client
from tests.calls.gw import sleep, wait_for
from webgate.calls.call import CallState
from webgate.media.codecs import ulaw_encode
from webgate.media.tones import ToneGenerator
from webgate.proto.rtmp import amf


async def _live_encoder_call(gw: Gateway) -> tuple[RtmpClient, int, Any]:
    """A well-behaved encoder-style client publishing G.711 to call/echo."""
    c = await open_client(gw.rtmp_port)
    res = await c.connect("call", port=gw.rtmp_port)
    assert res.name == "_result"
    sid = await c.create_stream()
    c.command("publish", "echo", "live", stream_id=sid)
    st = await c.status(sid, "NetStream.Publish.Start")
    call = gw.manager.registry.by_session_id(st["sessionId"])
    assert call is not None
    assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
    return c, sid, call


async def _feed_tone(c: RtmpClient, sid: int, frames: int, start: int = 0) -> int:
    gen = ToneGenerator(800.0, 8000, 0.4)
    for i in range(frames):
        c.send_audio(sid, (start + i) * 20, bytes([0x82]) + ulaw_encode(gen.generate(160)))
        await sleep(0.02)
    return start + frames


@pytest_twisted.ensureDeferred
async def test_refused_publish_gets_onstatus_and_close_others_unaffected() -> None:
    gw = Gateway()
    try:
        with LogFailures() as failures:
            good, gsid, call = await _live_encoder_call(gw)
            sent = await _feed_tone(good, gsid, 10)

            bad = await open_client(gw.rtmp_port)
            assert (await bad.connect("call", port=gw.rtmp_port)).name == "_result"
            sid = await bad.create_stream()
            bad.command("publish", "+4930123456", "live", stream_id=sid)
            st = await bad.status(sid, "NetStream.Publish.BadName")
            assert st["level"] == "error" and "destination_not_allowed" in st["description"]
            assert await wait_for(lambda: bad.lost, 3), "refused publisher not closed"

            bad2 = await open_client(gw.rtmp_port)
            assert (await bad2.connect("call", port=gw.rtmp_port)).name == "_result"
            sid = await bad2.create_stream()
            bad2.command("publish", "echo\r\nX-Evil: 1", "live", stream_id=sid)
            st = await bad2.status(sid, "NetStream.Publish.BadName")
            assert "invalid_destination" in st["description"]
            assert await wait_for(lambda: bad2.lost, 3)

            # unknown command: _error, connection stays
            res = await good.reply(good.command("noSuchMethod", 1))
            assert res.name == "_error" and res.args[0]["code"] == "NetConnection.Call.Failed"
            # play of a call that does not exist: onStatus StreamNotFound, connection stays
            viewer = await open_client(gw.rtmp_port)
            assert (await viewer.connect("call", port=gw.rtmp_port)).name == "_result"
            vs = await viewer.create_stream()
            viewer.command("play", "nobody", stream_id=vs)
            await viewer.status(vs, "NetStream.Play.StreamNotFound")
            viewer.command("play", "echo?codec=opus", stream_id=vs)
            await viewer.status(vs, "NetStream.Play.Failed")
            assert not viewer.lost

            # unknown application
            app = await open_client(gw.rtmp_port)
            res = await app.connect("live", port=gw.rtmp_port)
            assert res.name == "_error" and res.args[0]["code"] == "NetConnection.Connect.InvalidApp"
            assert await wait_for(lambda: app.lost, 3)

            await _feed_tone(good, gsid, 10, sent)
            assert not good.lost and call.state is CallState.ANSWERED
            assert len(gw.svc.registry) == 1
            assert call.leg.audio_in.sent_frames > 0
            assert not failures.events, failures.events
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_garbage_chunk_sizes_and_bad_amf_close_only_that_connection() -> None:
    gw = Gateway({"rtmp": {"max_chunk_size": 65536, "max_message_size": 262144}})
    try:
        with LogFailures() as failures:
            good, gsid, call = await _live_encoder_call(gw)
            sent = await _feed_tone(good, gsid, 5)

            async def attack(payload_fn: Any, connect_first: bool = True) -> RtmpClient:
                c = await open_client(gw.rtmp_port)
                assert await wait_for(lambda: c.handshake_done, 3)
                if connect_first:
                    assert (await c.connect("call", port=gw.rtmp_port)).name == "_result"
                payload_fn(c)
                assert await wait_for(lambda: c.lost, 5), "attacker not disconnected"
                return c

            rnd = random.Random(4)
            await attack(lambda c: c.raw(bytes(rnd.randrange(256) for _ in range(3000))), connect_first=False)
            await attack(lambda c: c.raw(bytes(rnd.randrange(256) for _ in range(3000))))
            # Set Chunk Size far beyond the limit (and with the high bit set)
            await attack(lambda c: c.message(2, 1, 0, 0, struct.pack(">I", 0x7FFFFFFF)))
            await attack(lambda c: c.message(2, 1, 0, 0, struct.pack(">I", 0x00FFFFFF)))
            # a message header claiming 16 MB
            await attack(lambda c: c.raw(bytes([0x03]) + b"\x00\x00\x00" + (0xFFFFFF).to_bytes(3, "big") + b"\x14" + b"\x00" * 4 + b"\x02" * 100))
            # invalid AMF in a command
            await attack(lambda c: c.message(3, 20, 0, 0, b"\x02\x00\x07publish\x00\xff\xff" + b"\x11" * 20))
            # a command before connect
            c = await open_client(gw.rtmp_port)
            assert await wait_for(lambda: c.handshake_done, 3)
            c.command("createStream")
            assert await wait_for(lambda: c.lost, 5)

            # fuzz: valid session setup, then mutated chunk streams and AMF payloads
            for i in range(25):
                c = await open_client(gw.rtmp_port)
                assert await wait_for(lambda c=c: c.handshake_done, 3)
                assert (await c.connect("call", port=gw.rtmp_port)).name == "_result"
                t, p = amf.encode_command("publish", 5, None, "echo", "live")
                data = bytearray(c.writer.write(3, t, 1, 0, p) + c.writer.write(4, 8, 1, 0, b"\x82" + b"\x7f" * 160))
                for _ in range(rnd.randint(1, 8)):
                    data[rnd.randrange(len(data))] = rnd.randrange(256)
                c.raw(bytes(data) + bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 200))))
                await sleep(0.02)
                c.transport.loseConnection()
            assert await wait_for(lambda: len(gw.factory.connections) == 1, 5), len(gw.factory.connections)
            assert await wait_for(lambda: len(gw.svc.registry) == 1, 5), "fuzzed connections left calls behind"

            await _feed_tone(good, gsid, 10, sent)
            assert not good.lost and call.state is CallState.ANSWERED and not call.ended
            assert gw.factory.by_ip == {"127.0.0.1": 1}
            assert not failures.events, [e.get("log_format") for e in failures.events]
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_connection_limit_and_connect_timeout() -> None:
    gw = Gateway({"rtmp": {"max_connections_per_ip": 2}})
    gw.factory.connect_timeout_s = 0.5
    try:
        a = await open_client(gw.rtmp_port)
        b = await open_client(gw.rtmp_port)
        assert await wait_for(lambda: a.handshake_done and b.handshake_done, 3)
        c = await open_client(gw.rtmp_port)
        assert await wait_for(lambda: c.lost, 3), "third connection from one IP accepted"
        assert not c.handshake_done
        assert gw.factory.refused_connections == 1
        assert (await a.connect("call", port=gw.rtmp_port)).name == "_result"
        # b never sends connect: closed by the timeout; a stays
        assert await wait_for(lambda: b.lost, 3)
        await sleep(0.3)
        assert not a.lost
        d = await open_client(gw.rtmp_port)  # a slot is free again
        assert await wait_for(lambda: d.handshake_done, 3)
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_encoder_session_id_in_onstatus_and_far_end_hangup_ends_publish_and_plays() -> None:
    gw = Gateway()
    try:
        pub = await open_client(gw.rtmp_port)
        assert (await pub.connect("call", port=gw.rtmp_port)).name == "_result"
        ps = await pub.create_stream()
        pub.command("publish", "echo?session=87654321", "live", stream_id=ps)
        st = await pub.status(ps, "NetStream.Publish.Start")
        assert st["sessionId"] == "87654321"
        call = gw.manager.registry.by_session_id("87654321")
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)

        viewers = []
        for path, app in (("echo?codec=pcmu", "call"), ("87654321?codec=pcmu", "session")):
            v = await open_client(gw.rtmp_port)
            assert (await v.connect(app, port=gw.rtmp_port)).name == "_result"
            vs = await v.create_stream()
            v.command("play", path, stream_id=vs)
            st = await v.status(vs, "NetStream.Play.Start")
            assert st["sessionId"] == "87654321"
            viewers.append((v, vs))
        await _feed_tone(pub, ps, 30)
        for v, vs in viewers:
            assert len(v.audio.get(vs, [])) > 10
            assert {t[1][0] for t in v.audio[vs]} == {0x82}

        gw.manager.hangup(call, "far_end_test")
        st = await pub.status(ps, "NetStream.Unpublish.Success")
        assert st["cause"] == "far_end_test"
        assert await wait_for(lambda: pub.lost, 3)
        for v, vs in viewers:
            await v.status(vs, "NetStream.Play.Stop")
            assert not v.lost
        assert gw.factory.live == {}
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_valid_commands_and_bad_bytes_in_one_read_act_on_nothing() -> None:
    """connect (or publish) followed by a protocol violation in the same TCP segment: the core has
    already failed the connection, so the adapter neither answers the connect nor places a call."""
    gw = Gateway()
    try:
        with LogFailures() as failures:
            c = await open_client(gw.rtmp_port)
            assert await wait_for(lambda: c.handshake_done, 3)
            t, p = amf.encode_command("connect", 1, {"app": "call", "tcUrl": "rtmp://x/call"})
            c.raw(c.writer.write(3, t, 0, 0, p) + c.writer.write(2, 1, 0, 0, struct.pack(">I", 0x7FFFFFFF)))
            assert await wait_for(lambda: c.lost, 3)
            assert c.find("_result") is None

            c = await open_client(gw.rtmp_port)
            assert (await c.connect("call", port=gw.rtmp_port)).name == "_result"
            sid = await c.create_stream()
            t, p = amf.encode_command("publish", 0, None, "echo", "live")
            c.raw(c.writer.write(8, t, sid, 0, p) + c.writer.write(3, 20, 0, 0, b"\x02\x00\x07publish\x00\xff\xff"))
            assert await wait_for(lambda: c.lost, 3)
            await sleep(0.3)
            assert len(gw.svc.registry) == 0, "a call was placed for a connection that had already failed"
            assert c.statuses(sid) == []
            assert not failures.events, [e.get("log_format") for e in failures.events]
    finally:
        await gw.stop()
