"""Flash RPC mode over a real socket: a scripted Flash-style client against the RTMP adapter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest_twisted

from tests.adapters.rtmp_helpers import (
    Gateway,
    RtmpClient,
    flash_client,
    open_client,
    send_nellymoser,
)
from tests.calls.gw import sleep, wait_for
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency
from webgate.media.codecs import ulaw_decode
from webgate.proto import flv

TONE_HZ = 800.0


async def _flash(gw: Gateway, *args: Any, user: str = "alice@example.net", flash_ver: str = "WIN 11,2,202,235") -> RtmpClient:
    return await flash_client(gw.rtmp_port, user, *args, flash_ver=flash_ver)


def _received_pcm(c: RtmpClient, stream_id: int) -> tuple[np.ndarray, set[int]]:
    tags = c.audio.get(stream_id, [])
    formats = {t[1][0] >> 4 for t in tags}
    pcm = [ulaw_decode(t[1][1:]) for t in tags if t[1][0] >> 4 == flv.SOUND_G711_MULAW]
    return (np.concatenate(pcm) if pcm else np.zeros(0, np.int16)), formats


@pytest_twisted.ensureDeferred
async def test_flash_rpc_call_audio_dtmf_bye() -> None:
    gw = Gateway()
    try:
        c = await _flash(gw, "alice", "secret", "Alice Smith")
        assert c.hs.server_digest, "the server's digest handshake was verified"
        mic = await c.create_stream()
        spk = await c.create_stream()
        c.command("publish", "local", "live", stream_id=mic)
        await c.status(mic, "NetStream.Publish.Start")
        c.command("play", "remote", stream_id=spk)  # Flash Player 11 -> G.711 by default
        await c.status(spk, "NetStream.Play.Start")

        res = await c.reply(c.command("invite", "echo"))
        assert res.name == "_result"
        session_id = res.args[0]
        assert isinstance(session_id, str) and session_id.isdigit() and 8 <= len(session_id) <= 10
        sid_cb = await c.callback("sessionId")
        assert sid_cb.args == [session_id]
        await c.callback("accepted")
        call = gw.manager.registry.by_session_id(session_id)
        assert call is not None and call.state is CallState.ANSWERED
        assert call.identity is None  # a password is no token: the URL's user is not an identity
        assert call.media_path == "packet"  # PCMU from SIP goes to the Flash 11 client untouched

        await send_nellymoser(c, mic, 2.5, TONE_HZ)
        pcm, formats = _received_pcm(c, spk)
        assert formats == {flv.SOUND_G711_MULAW}
        assert len(pcm) > 8000, len(pcm)
        freq = dominant_frequency(pcm[-8000:], 8000)
        print(f"\nFlash RPC: Nellymoser in, G.711 back: {freq:.1f} Hz")
        assert abs(freq - TONE_HZ) < 15, freq
        stamps = [t for t, _ in c.audio[spk]]
        assert stamps == sorted(stamps) and stamps[1] - stamps[0] == 20

        res = await c.reply(c.command("sendDTMF", "12#"))
        assert res.name == "_result"
        assert await wait_for(lambda: len([x for x in c.commands if x.name == "dtmf"]) >= 3, 5)
        assert [x.args[0] for x in c.commands if x.name == "dtmf"] == ["1", "2", "#"]
        assert call.dtmf_sent == ["1", "2", "#"]

        res = await c.reply(c.command("sendDTMF", "x"))
        assert res.name == "_error" and res.args[0]["reason"] == "invalid_dtmf"

        res = await c.reply(c.command("hold", True))
        assert res.name == "_result" and res.args[0] is True
        n = len(c.audio[spk])
        await sleep(0.3)
        assert len(c.audio[spk]) == n, "audio kept flowing on hold"
        res = await c.reply(c.command("hold", False))
        assert res.name == "_result"

        res = await c.reply(c.command("bye"))
        assert res.name == "_result"
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        assert call.end_cause == "client_hangup"
        assert c.find("byed") is None  # our own bye is not echoed back
        assert not c.lost

        # a second call on the same connection
        res = await c.reply(c.command("invite", "echo"))
        assert res.name == "_result" and res.args[0] != session_id
        await wait_for(lambda: len([x for x in c.commands if x.name == "accepted"]) >= 2, 5)
        c.transport.loseConnection()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5), "closing the connection hangs up"
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_flash_rpc_refused_then_far_end_bye_and_nellymoser_out() -> None:
    gw = Gateway()
    try:
        c = await _flash(gw, "bob", "", "", flash_ver="WIN 10,3,181,14")  # old Flash: Nellymoser out
        spk = await c.create_stream()
        c.command("play", "remote", stream_id=spk)
        await c.status(spk, "NetStream.Play.Start")

        res = await c.reply(c.command("invite", "+4930123456"))
        assert res.name == "_error" and res.args[0]["reason"] == "destination_not_allowed"
        assert (await c.callback("rejected")).args == ["destination_not_allowed"]
        res = await c.reply(c.command("invite", "echo", "12345678"))  # client-supplied session ID
        assert res.name == "_result" and res.args[0] == "12345678"
        await c.callback("accepted")
        res = await c.reply(c.command("invite", "echo"))
        assert res.name == "_error" and res.args[0]["reason"] == "call_in_progress"
        gw.manager.hangup(gw.manager.registry.by_session_id("12345678"), "test")
        await c.callback("byed")
        assert not c.lost

        res = await c.reply(c.command("invite", "tone"))
        assert res.name == "_result"
        await c.callback("accepted")
        await sleep(1.2)
        tags = c.audio.get(spk, [])
        assert tags and {t[1][0] >> 4 for t in tags} == {flv.SOUND_NELLYMOSER_8K}
        from webgate.media.codecs import create_decoder

        dec = create_decoder("nellymoser", 8000)
        pcm = np.concatenate([dec.decode(t[1][1:]) for t in tags])
        freq = dominant_frequency(pcm[-4000:], 8000)
        print(f"\nFlash RPC: tone as Nellymoser: {freq:.1f} Hz")
        assert abs(freq - 1000.0) < 20, freq
        # the far end hangs up
        bc = next(iter(gw.manager.builtin_calls.values()))
        bc.session.hangup()
        gw.manager.transport.flush()
        gw.manager._end_builtin(bc)
        assert await wait_for(lambda: len([x for x in c.commands if x.name == "byed"]) >= 2, 5)
        assert len(gw.svc.registry) == 0

        for name in ("accept", "reject"):
            res = await c.reply(c.command(name))
            assert res.name == "_error" and res.args[0]["reason"] == "no_call"
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_connect_argument_selects_codec_and_bad_user_rejected() -> None:
    gw = Gateway()
    try:
        c = await _flash(gw, "carol", "", "Carol", {"codec": "aac"}, user="carol", flash_ver="WIN 9,0,0,0")
        spk = await c.create_stream()
        c.command("play", "remote", stream_id=spk)
        await c.status(spk, "NetStream.Play.Start")
        res = await c.reply(c.command("invite", "tone"))
        assert res.name == "_result"
        await c.callback("accepted")
        assert await wait_for(lambda: len(c.audio.get(spk, [])) > 5, 5)
        first = c.audio[spk][0][1]
        assert first[:2] == bytes([0xAF, 0x00]), "AAC sequence header first"
        assert all(t[1][:2] == bytes([0xAF, 0x01]) for t in c.audio[spk][1:])

        bad = await open_client(gw.rtmp_port)
        res = await bad.connect("sip", "x", port=gw.rtmp_port)
        assert res.name == "_error" and res.args[0]["code"] == "NetConnection.Connect.Rejected"
        assert await wait_for(lambda: bad.lost, 3)
        assert not c.lost
    finally:
        await gw.stop()
