"""The gateway's REGISTER client against Kamailio (an authenticating registrar), and a call through it.

Kamailio (tests/interop/peers.py) challenges REGISTER with 401 and INVITE with 407, checks that the auth user
equals the From/To user, record-routes and relays INVITEs to the registered contact. Users: gateway/gwpw,
bob/bobpw.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.calls.gw import make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency


def kamailio_trunk(kamailio: peers.Kamailio, **trunk: Any) -> Any:
    return make_config(
        {
            "trunk": [
                {
                    "name": "kam",
                    "target": f"sip:{kamailio.domain}",
                    "username": "gateway",
                    "password": "gwpw",
                    "from_user": "gateway",  # Kamailio: auth user == From user
                    **trunk,
                }
            ],
            "route": [{"pattern": "bob|alice", "trunk": "kam", "public": True}],
        }
    )


def register_ok_lines(kamailio: peers.Kamailio) -> list[str]:
    return [ln for ln in kamailio.log_text().splitlines() if "REGISTER ok: sip:gateway@" in ln]


def binding(kamailio: peers.Kamailio) -> dict[str, str]:
    """Call-ID, CSeq and Expires of the gateway's binding (kamcmd ul.lookup)."""
    out = kamailio.rpc("ul.lookup", "location", "gateway")
    return {k: v for k, v in re.findall(r"(Call-ID|CSeq|Expires):\s*(\S+)", out)}


@pytest_twisted.ensureDeferred
async def test_register_with_digest_auth_refresh_and_unregister(kamailio: peers.Kamailio) -> None:
    svc = start_telephony(kamailio_trunk(kamailio, register=True, register_expires=60))
    try:
        (reg,) = svc.registrations
        assert await wait_for(lambda: reg.registered_expires > 0, 5), kamailio.log_tail(2000)
        t_registered = svc.reactor.seconds()
        contacts = kamailio.registered_contacts("gateway")
        host, port = svc.bound["udp"]
        assert len(contacts) == 1 and f"@{host}:{port}" in contacts[0], contacts
        assert await wait_for(lambda: len(register_ok_lines(kamailio)) == 1, 2), kamailio.log_tail(2000)
        first = binding(kamailio)
        assert int(first["CSeq"]) == 2  # REGISTER -> 401 -> REGISTER with Authorization
        # Kamailio grants at least its min_expires (60 s); the refresh is due at 80 % of what was granted
        assert reg.registered_expires >= 60
        assert reg.refresh_at is not None
        assert abs(reg.refresh_at - (t_registered + 0.8 * reg.registered_expires)) < 1.0
        # bring the refresh forward (the refresh itself is the real code path: timer -> REGISTER -> 401 -> auth)
        reg.refresh_at = svc.reactor.seconds() + 0.2
        svc.transport.flush()
        assert await wait_for(lambda: len(register_ok_lines(kamailio)) == 2, 5), kamailio.log_tail(2000)
        second = binding(kamailio)
        assert second["Call-ID"] == first["Call-ID"]  # same registration, RFC 3261 10.2.4
        assert int(second["CSeq"]) > int(first["CSeq"])
        assert len(kamailio.registered_contacts("gateway")) == 1
        assert reg.refresh_at is not None and reg.refresh_at > svc.reactor.seconds() + 30  # next one re-armed
        # shutting down unregisters (Expires: 0)
        await svc.drain()
        assert await wait_for(lambda: kamailio.registered_contacts("gateway") == [], 3)
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_register_with_wrong_password_fails(kamailio: peers.Kamailio) -> None:
    svc = start_telephony(kamailio_trunk(kamailio, register=True, password="wrong"))
    try:
        (reg,) = svc.registrations
        # 401, retry with credentials, 401 again -> give up (no loop)
        assert await wait_for(lambda: reg.refresh_at is not None, 5), kamailio.log_tail(2000)
        assert reg.registered_expires == 0
        assert kamailio.registered_contacts("gateway") == []
        await sleep(0.5)
        challenges = kamailio.log_text().count("auth challenge for REGISTER")
        assert challenges <= 1, kamailio.log_tail(2000)
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_call_through_kamailio_to_registered_baresip(
    kamailio: peers.Kamailio, baresip_factory: Callable[..., peers.Baresip]
) -> None:
    bob = baresip_factory("bob", registrar=kamailio.domain, password="bobpw")
    bob.wait_registered(10)  # before the gateway runs: blocking is fine here
    svc = start_telephony(kamailio_trunk(kamailio))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "bob")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 8), kamailio.log_tail(2000)
        # Kamailio answered the first INVITE with 407; the second carried Proxy-Authorization and was relayed
        assert call.sip.auth_attempts == 1
        assert call.sip.invite is not None and call.sip.invite.headers.get("Proxy-Authorization")
        assert "relaying INVITE sip:gateway@" in kamailio.log_text(), kamailio.log_tail(2000)
        await sleep(2.0)
        rate = leg.received_rate or 8000
        pcm = leg.recording()
        assert len(pcm) > rate and abs(dominant_frequency(pcm[-rate:], rate) - 440) < 20
        # BYE follows the Record-Route through Kamailio and reaches baresip
        dialog = call.sip.dialog
        assert dialog is not None and [str(r.uri.port) for r in dialog.route_set] == [str(kamailio.port)]
        assert dialog.remote_target.port == bob.sip_port
        call.hangup()
        await deferToThread(bob.wait_event, "CALL_CLOSED", 5)
        assert "relaying BYE" not in kamailio.log_text()  # loose-routed in-dialog, not a new lookup
        heard = bob.recorded_wav("dec")
        assert heard is not None and abs(peers.dominant_frequency(heard) - 1000) < 20
    finally:
        await svc.stopService()
