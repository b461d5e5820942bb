"""Authorisation on the RTMP ingress: Flash RPC (token = the connect's second argument) with a
scripted client over a real socket, and encoder style (``?token=`` on the stream name or the
connect URL) with real ffmpeg; who may listen to a call by session ID or destination."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import (
    RtmpClient,
    ffmpeg,
    flash_client,
    play_status,
)
from tests.calls.gw import wait_for
from tests.security.secure_gw import (
    OTHER_KEY,
    ROUTED,
    SecureGateway,
    alg_none_token,
    expired_token,
    token,
)
from webgate.calls.call import CallState


async def _flash(gw: SecureGateway, secret: Any, user: str = "alice@example.net") -> RtmpClient:
    return await flash_client(gw.rtmp_port, user, "alice", secret, "Alice")


async def _invite(c: RtmpClient, dest: str) -> Any:
    return await c.reply(c.command("invite", dest))


@pytest_twisted.ensureDeferred
async def test_flash_rpc_tokens() -> None:
    gw = SecureGateway()
    try:
        # a siprtmp-style password is not a token: public destinations only
        c = await _flash(gw, "secret")
        res = await _invite(c, ROUTED)
        assert res.name == "_error" and res.args[0]["reason"] == "token_required", res
        assert (await c.callback("rejected")).args == ["token_required"]
        res = await _invite(c, "echo")
        assert res.name == "_result", res
        await c.callback("accepted")
        await c.reply(c.command("bye"))
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        c.transport.loseConnection()

        for secret, reason in [
            (token(key=OTHER_KEY), "invalid_token"),
            (alg_none_token(), "invalid_token"),
            (expired_token(), "token_expired"),
            (token(dest="4321"), "destination_not_allowed"),
        ]:
            c = await _flash(gw, secret)
            res = await _invite(c, ROUTED)
            assert res.name == "_error" and res.args[0]["reason"] == reason, (reason, res)
            if reason == "invalid_token":  # refused for a public destination too
                res = await _invite(c, "echo")
                assert res.name == "_error" and res.args[0]["reason"] == reason
            c.transport.loseConnection()
        assert len(gw.svc.registry) == 0

        c = await _flash(gw, token(sub="alice-token", display_name="Alice"))
        res = await _invite(c, ROUTED)
        assert res.name == "_result", res
        await c.callback("accepted", timeout=8)
        call = gw.manager.registry.by_session_id(res.args[0])
        assert call is not None and call.state is CallState.ANSWERED
        assert call.identity == "alice-token"  # the token's sub, not the URL's user
        assert call.route.trunk_name == "self"
        c.transport.loseConnection()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await gw.stop()


def _publish(gw: SecureGateway, path: str, seconds: float = 6.0) -> Any:
    return ffmpeg(
        "-re", "-f", "lavfi", "-i", f"sine=frequency=800:sample_rate=8000:duration={seconds:g}",
        "-c:a", "pcm_mulaw", "-f", "flv", gw.rtmp_url(path), timeout=seconds + 20,
    )


@pytest.mark.usefixtures("ffmpeg_program")
@pytest_twisted.ensureDeferred
async def test_encoder_style_tokens_with_ffmpeg() -> None:
    gw = SecureGateway()
    try:
        for path, reason in [
            (f"call/{ROUTED}", "token_required"),
            (f"call/{ROUTED}?token={token(key=OTHER_KEY)}", "invalid_token"),
            (f"call/{ROUTED}?token={expired_token()}", "token_expired"),
            (f"call/{ROUTED}?token={token(dest='1999')}", "destination_not_allowed"),
        ]:
            n = len(gw.refusals.codes)
            code, _out, err = await _publish(gw, path, 2).wait()
            assert code != 0, f"ffmpeg published {path} without error"
            assert gw.refusals.codes[n:] == [reason], (path, gw.refusals.codes[n:], err[-300:])
        assert len(gw.svc.registry) == 0

        # a valid token on the stream name: the call is placed through the non-public route
        pub = _publish(gw, f"call/{ROUTED}?token={token(sub='encoder-1')}")
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), gw.refusals.codes
        (call,) = list(gw.svc.registry)
        assert call.identity == "encoder-1" and call.destination == ROUTED
        sid = call.session_id
        # who may listen: the session ID alone is not enough for a call placed with a token
        assert await play_status(gw.rtmp_port, "session", sid) == "NetStream.Play.StreamNotFound"
        assert await play_status(gw.rtmp_port, "session", f"{sid}?token={token(sub='someone-else')}") == "NetStream.Play.StreamNotFound"
        assert await play_status(gw.rtmp_port, "session", f"{sid}?token={token(sub='x', key=OTHER_KEY)}") == "NetStream.Play.StreamNotFound"
        assert await play_status(gw.rtmp_port, "call", ROUTED) == "NetStream.Play.StreamNotFound"
        assert await play_status(gw.rtmp_port, "session", f"{sid}?token={token(sub='encoder-1')}") == "NetStream.Play.Start"
        assert await play_status(gw.rtmp_port, "session", f"{sid}?token={token(dest=None, session_id=sid)}") == "NetStream.Play.Start"
        assert await play_status(gw.rtmp_port, "call", f"{ROUTED}?token={token(sub='encoder-1')}") == "NetStream.Play.Start"
        code, _out, err = await pub.wait()
        assert code == 0, err[-500:]
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)

        # the token on the connect URL (rtmp://HOST/call?token=JWT/DEST)
        pub = _publish(gw, f"call?token={token(sub='encoder-2')}/{ROUTED}", 4)
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), gw.refusals.codes
        assert next(iter(gw.svc.registry)).identity == "encoder-2"
        await pub.wait()

        # public destinations still work without a token, and anyone may listen to those
        pub = _publish(gw, "call/echo", 4)
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10)
        sid = next(iter(gw.svc.registry)).session_id
        assert await play_status(gw.rtmp_port, "session", sid) == "NetStream.Play.Start"
        await pub.wait()
    finally:
        await gw.stop()
