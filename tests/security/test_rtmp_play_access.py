"""Who may listen over RTMP play (issue 12, item 7) and who a Flash RPC client is (item 8), over
real sockets: scripted RTMP clients bound to 127.0.0.1 and 127.0.0.2 (two client addresses on
Linux loopback), ffmpeg as the encoder, the REST API and the CDR file of a whole gateway.

- Guessing session IDs: every failed play counts toward ``[limits] max_attempts_per_ip_per_minute``;
  a connection is closed after ``[rtmp] play_failures_before_close`` of them; an address at its
  limit cannot play at all, not even a session ID that exists (no oracle).
- ``play call/DESTINATION`` of a call placed without a token is allowed only from the address that
  published it; any other address needs the session ID or a token naming the call.
- A Flash RPC connection without a token has no identity (``null``), whatever the URL's user."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_twisted

from tests.adapters.rtmp_helpers import (
    RtmpClient,
    ffmpeg,
    flash_client,
    open_client,
    play_status,
)
from tests.calls.gw import wait_for
from tests.ops.helpers import api, start_gateway
from tests.security.secure_gw import KEY, SecureGateway, token
from webgate.calls.call import CallState
from webgate.counters import error_counts

GUESSER = "127.0.0.1"
OTHER = "127.0.0.2"
ATTEMPT_LIMIT = 10
FAILURES_BEFORE_CLOSE = 3  # the default of [rtmp] play_failures_before_close
FINAL = ("NetStream.Play.Start", "NetStream.Play.StreamNotFound", "NetStream.Play.Failed")


async def _echo_call_from(gw: SecureGateway, source: str) -> tuple[RtmpClient, str]:
    """A token-less Flash RPC call to ``echo`` placed from ``source``; its session ID."""
    c = await open_client(gw.rtmp_port, source=source)
    res = await c.connect("sip/caller@example.net", "caller", "password", port=gw.rtmp_port)
    assert res.name == "_result", res
    res = await c.reply(c.command("invite", "echo"))
    assert res.name == "_result", res
    await c.callback("accepted", timeout=8)
    return c, res.args[0]


@pytest_twisted.ensureDeferred
async def test_guessing_session_ids_is_cut_off_after_the_limit() -> None:
    gw = SecureGateway(limits={"max_attempts_per_ip_per_minute": ATTEMPT_LIMIT})
    refused_before = error_counts().get("rtmp_play_refused", 0)
    try:
        caller, real_sid = await _echo_call_from(gw, OTHER)
        rng = random.Random(12)
        outcomes: Counter[str] = Counter()
        plays_per_connection: list[int] = []
        closed_by_gateway = 0
        c: RtmpClient | None = None
        for _ in range(100):
            if c is None or c.lost:
                c = await open_client(gw.rtmp_port, source=GUESSER)
                res = await c.connect("session", port=gw.rtmp_port)
                assert res.name == "_result", res
                plays_per_connection.append(0)
            plays_per_connection[-1] += 1
            client: RtmpClient = c
            sid = await client.create_stream()
            client.command("play", str(rng.randrange(10**9, 10**10)), stream_id=sid)
            assert await wait_for(lambda: any(s.get("code") in FINAL for s in client.statuses(sid)) or client.lost, 5)  # noqa: B023
            code = next((s["code"] for s in client.statuses(sid) if s.get("code") in FINAL), "closed without an answer")
            outcomes[code] += 1
            if await wait_for(lambda: client.lost, 0.1):  # noqa: B023 - this client never closes: the gateway did
                closed_by_gateway += 1
            else:
                client.command("deleteStream", float(sid))  # as players do: the stream count stays low
        if c is not None and not c.lost:
            c.transport.loseConnection()
        connections = len(plays_per_connection)
        print(f"\n100 guesses: {dict(outcomes)}; {connections} connections, {closed_by_gateway} closed by the gateway")
        # the first ATTEMPT_LIMIT failures are answered as any unknown call; every later play is refused
        assert outcomes["NetStream.Play.StreamNotFound"] == ATTEMPT_LIMIT, outcomes
        assert outcomes["NetStream.Play.Failed"] == 100 - ATTEMPT_LIMIT, outcomes
        assert "NetStream.Play.Start" not in outcomes
        # every connection was closed by the gateway: after FAILURES_BEFORE_CLOSE failures, or at the
        # first play once the address is at its limit (the 4th connection: its 10th failure, then that)
        assert closed_by_gateway == connections, (closed_by_gateway, connections)
        assert plays_per_connection == [FAILURES_BEFORE_CLOSE] * 3 + [2] + [1] * 89, plays_per_connection
        assert gw.rtmp.plays_refused == 100
        assert error_counts().get("rtmp_play_refused", 0) - refused_before == 100
        # at its limit the guesser cannot play even a session ID that exists: no oracle
        assert await play_status(gw.rtmp_port, "session", real_sid, source=GUESSER) == "NetStream.Play.Failed"
        # another address can (the session ID is what it needs for a call placed without a token)
        assert await play_status(gw.rtmp_port, "session", real_sid, source=OTHER) == "NetStream.Play.Start"
        caller.transport.loseConnection()
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_play_by_destination_of_a_call_without_token_only_from_its_publisher(
    require_program: Callable[[str], str],
) -> None:
    require_program("ffmpeg")
    gw = SecureGateway()
    try:
        # ffmpeg publishes from 127.0.0.1, a public destination, no token
        pub = ffmpeg(
            "-re", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=8000:duration=8",
            "-c:a", "pcm_mulaw", "-f", "flv", gw.rtmp_url("call/echo"), timeout=30,
        )
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), gw.refusals.codes
        (call,) = list(gw.svc.registry)
        assert call.grant is None
        sid = call.session_id

        # another address: the destination is no secret
        assert await play_status(gw.rtmp_port, "call", "echo", source=OTHER) == "NetStream.Play.StreamNotFound"
        # ... a token that does not name the call does not help (a call without a token has no sub)
        assert await play_status(gw.rtmp_port, "call", f"echo?token={token(sub='x')}", source=OTHER) == "NetStream.Play.StreamNotFound"
        assert await play_status(gw.rtmp_port, "call", f"echo?token={token(dest=None, session_id='1' * 10)}", source=OTHER) == "NetStream.Play.StreamNotFound"
        # ... the session ID, or a token naming it, does
        assert await play_status(gw.rtmp_port, "session", sid, source=OTHER) == "NetStream.Play.Start"
        assert await play_status(gw.rtmp_port, "call", f"echo?token={token(dest=None, session_id=sid)}", source=OTHER) == "NetStream.Play.Start"
        # the publisher's own address: encoders publish and play from one host
        assert await play_status(gw.rtmp_port, "call", "echo", source="127.0.0.1") == "NetStream.Play.Start"

        code, _out, err = await pub.wait()
        assert code == 0, err[-500:]
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_flash_rpc_without_token_has_no_identity(tmp_path: Path) -> None:
    cdr = tmp_path / "cdr.jsonl"
    gw = start_gateway({"rtmp": {"listen": "127.0.0.1:0"}, "tokens": {"key": KEY}, "cdr": {"file": str(cdr)}})
    try:
        hp = gw.gw.listening_address("rtmp")
        assert hp is not None
        views: dict[str, Any] = {}
        for label, secret in (("password", "secret-password"), ("token", token(dest=None, sub="alice-sub"))):
            c = await flash_client(hp.port, "alice@example.net", "alice", secret, "Alice")
            res = await c.reply(c.command("invite", "echo"))
            assert res.name == "_result", res
            await c.callback("accepted", timeout=8)
            status, body = await api("GET", gw.url("/api/calls"))
            assert status == 200 and len(body["calls"]) == 1, body
            views[label] = body["calls"][0]
            await c.reply(c.command("bye"))
            assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
            c.transport.loseConnection()
        # a password (siprtmp style) is no token: the URL's user is a name the client chose
        assert views["password"]["identity"] is None, views["password"]
        assert views["token"]["identity"] == "alice-sub", views["token"]
        assert await wait_for(lambda: cdr.exists() and cdr.read_text().count("\n") == 2, 5)
        records = [json.loads(line) for line in cdr.read_text().splitlines()]
        assert [r["identity"] for r in records] == [None, "alice-sub"], records
    finally:
        await gw.stop()
