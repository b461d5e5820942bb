"""Calls to the built-in echo over SIP/TCP and SIP/TLS: the gateway's UAC reaches its own UAS through a
trunk pointing at its own TCP (or TLS) listener; the audio must come back at 1000 Hz.

The TLS certificate is a self-signed one made in tmp_path (``cryptography``), valid for 127.0.0.1 and
localhost; the UAC side trusts it as its CA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.tlsutil import self_signed
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


def self_trunk_config(transport: str, port: int, **sip: Any) -> Any:
    return make_config(
        {
            "trunk": [{"name": "self", "target": f"sip:127.0.0.1:{port}", "transport": transport}],
            "route": [{"pattern": "loop", "trunk": "self", "rewrite": "echo", "public": True}],
            "sip": {transport: f"127.0.0.1:{port}", **sip},
        }
    )


async def call_echo_and_check(svc: Any, transport: str) -> None:
    leg = LocalLeg(tone_hz=1000.0)
    call = svc.manager.place_call(leg, "loop")
    assert call.route.transport == transport and call.route.target.params.get("transport") == transport
    leg.start_source(call)
    assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), svc.transport.stats
    # both ends of the call ran over the stream transport
    assert call.sip.transport == transport
    (uas,) = svc.manager.builtin_calls.values()
    assert uas.session.transport == transport
    assert any(k[0] == transport for k in svc.transport.connections), list(svc.transport.connections)
    await sleep(1.5)
    assert_tone(leg.recording(), leg.received_rate or 8000, 1000.0, "echo")
    call.hangup()
    assert await wait_for(lambda: not svc.manager.builtin_calls, 3)  # the BYE made it over the stream
    assert len(svc.registry) == 0 and not svc.rtp_pool.in_use


async def echo_over(transport: str, **sip: Any) -> None:
    """A gateway with a ``transport`` listener and a trunk to itself: one echo call over it."""
    port = peers.free_port("tcp")
    svc = start_telephony(self_trunk_config(transport, port, **sip))
    try:
        assert svc.bound[transport] == ("127.0.0.1", port)
        await call_echo_and_check(svc, transport)
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_echo_over_tcp() -> None:
    await echo_over("tcp")


@pytest_twisted.ensureDeferred
async def test_echo_over_tls(tmp_path: Path) -> None:
    cert, key, _pem = self_signed(tmp_path, "sip")
    # sip.tls_ca: trust the self-signed certificate for our outgoing TLS connection
    await echo_over("tls", tls_cert=str(cert), tls_key=str(key), tls_ca=str(cert))


@pytest_twisted.ensureDeferred
async def test_tls_with_untrusted_certificate_fails_cleanly(tmp_path: Path) -> None:
    """Without trusting the self-signed certificate the TLS handshake fails: the call ends, nothing leaks."""
    cert, key, _pem = self_signed(tmp_path, "sip")
    port = peers.free_port("tcp")
    svc = start_telephony(self_trunk_config("tls", port, tls_cert=str(cert), tls_key=str(key), t1_ms=50))
    try:
        leg = LocalLeg(tone_hz=None)
        call = svc.manager.place_call(leg, "loop")
        assert await wait_for(lambda: leg.ended is not None, 8), call.state
        # the failed handshake is reported to the transactions at once: no wait for Timer B
        assert call.state is CallState.ENDED and leg.ended == ("network_error", 503), leg.ended
        assert not svc.manager.builtin_calls
        assert await wait_for(lambda: len(svc.registry) == 0 and not svc.rtp_pool.in_use, 3)
    finally:
        await svc.stopService()
