"""RTMP calls on cluster nodes take the cluster's admission step (issue 15,
``CallManager.reserve``) like WebSocket calls: two whole gateways, nodes "a" and "b" of one
cluster on a private redis-server, with RTMP listeners.

- ``max_calls_per_identity = 2``: two of alice's calls on A, and her third, an encoder-style
  publish or a Flash RPC ``invite`` on B, is refused ``too_many_calls_for_identity``;
- a session ID chosen by the RTMP client (``?session=ID``) is claimed across the cluster: free,
  it is the call's ID on B; in use on A, B refuses it ``session_id_in_use``;
- an RTMP call's session ID is held cluster-wide with its IP slot (``max_calls_per_ip = 3``
  counts it: a fourth call from the address, on either node, is refused).
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.adapters.rtmp_helpers import RtmpClient, flash_client, open_client
from tests.calls.gw import rtp_range, sleep, wait_for
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster_wiring import place
from tests.ops.helpers import RunningGateway, gateway_config
from webgate.calls.call import CallState
from webgate.security.tokens import mint_token

KEY = "cluster-rtmp-token-key-0123456789abcdef"


def node_config(server: RedisServer, node_id: str) -> Any:
    lo, hi = rtp_range(200)
    return gateway_config({
        "cluster": {"enabled": True, "redis_url": server.url, "node_id": node_id, "heartbeat_s": 0.25,
                    "node_ttl_s": 1.5},
        "rtmp": {"listen": "127.0.0.1:0"},
        "rtp": {"port_min": lo, "port_max": hi},
        "limits": {"max_calls_per_identity": 2, "max_calls_per_ip": 3, "max_attempts_per_ip_per_minute": 0},
        "tokens": {"key": KEY},
    })


def rtmp_port(gw: RunningGateway) -> int:
    return int(gw.base("rtmp", "rtmp").rsplit(":", 1)[1])


async def publish(gw: RunningGateway, name: str) -> tuple[RtmpClient, dict[str, Any]]:
    """A scripted encoder publishing ``call/NAME``: the client and its final publish status."""
    port = rtmp_port(gw)
    c = await open_client(port)
    await c.connect("call", port=port)
    stream = await c.create_stream()
    c.command("publish", name, "live", stream_id=stream)
    final = ("NetStream.Publish.Start", "NetStream.Publish.BadName", "NetStream.Publish.Failed")
    assert await wait_for(lambda: any(s.get("code") in final for s in c.statuses(stream)), 8), c.statuses(stream)
    return c, next(s for s in c.statuses(stream) if s.get("code") in final)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_rtmp_calls_take_the_cluster_admission_step(redis_server: RedisServer) -> None:
    a = RunningGateway(node_config(redis_server, "a"))
    b = RunningGateway(node_config(redis_server, "b"))
    clients: list[RtmpClient] = []
    placed: list[Any] = []
    try:
        assert await wait_for(lambda: a.gw.cluster.node.available and b.gw.cluster.node.available, 5)
        alice = mint_token(KEY, dest="echo", sub="alice")
        for _ in range(2):
            call, _leg = await place(a, token=alice)
            placed.append(call)

        # alice's third call, on B, over RTMP: refused cluster-wide (publish and Flash invite)
        c, status = await publish(b, f"echo?token={alice}")
        clients.append(c)
        assert status["code"] == "NetStream.Publish.Failed", status
        assert status["description"].startswith("too_many_calls_for_identity"), status
        # a Flash RPC invite without a token (a public destination): placed, its ID reserved
        flash = await flash_client(rtmp_port(b), "bob", "bob", "", "Bob")
        clients.append(flash)
        reply = await flash.reply(flash.command("invite", "echo"))
        assert reply.name == "_result", reply
        session = str(reply.args[0])
        assert await wait_for(lambda: b.gw.registry.by_session_id(session) is not None, 5)
        assert b.gw.cluster.node.is_held(session)
        flash_alice = await flash_client(rtmp_port(b), "alice", "alice", alice, "Alice")
        clients.append(flash_alice)
        reply = await flash_alice.reply(flash_alice.command("invite", "echo"))
        assert reply.name == "_error" and reply.args[0]["reason"] == "too_many_calls_for_identity", reply

        # a chosen session ID: free, it is the call's; in use on A, B refuses it
        c, status = await publish(b, "echo?session=4123456789")
        clients.append(c)
        assert status["code"] == "NetStream.Publish.Start" and status["sessionId"] == "4123456789", status
        c, status = await publish(b, f"echo?session={placed[0].session_id}")
        clients.append(c)
        assert status["code"] == "NetStream.Publish.BadName", status
        assert status["description"].startswith("session_id_in_use"), status

        # the RTMP calls hold their address's slots cluster-wide: 127.0.0.1 has 2 on B (the
        # invite, the publish); a publish on A is its 3rd, and a 4th, on B, is refused
        c, status = await publish(a, "echo")
        clients.append(c)
        assert status["code"] == "NetStream.Publish.Start", status
        c, status = await publish(b, "echo")
        clients.append(c)
        assert status["code"] == "NetStream.Publish.Failed", status
        assert status["description"].startswith("too_many_calls_from_ip"), status
        assert await wait_for(lambda: all(c.state is CallState.ANSWERED for c in placed), 10)
    finally:
        for c in clients:
            c.transport.loseConnection()
        for call in placed:
            if not call.ended:
                call.hangup()
        await sleep(0.2)
        await a.stop()
        await b.stop()
