"""A forked INVITE answered twice, against SIPp as the forking proxy (RFC 3261 §13.2.2.4): the
gateway's call stays with the first 2xx (fork A, its audio echoed back by SIPp); the second
fork's 2xx is ACKed and that dialog ended with exactly one BYE, and each retransmission of that
2xx gets an ACK and no further BYE. The call's own BYE goes to fork A when it is hung up."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest_twisted

from tests.calls.gw import assert_tone, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.interop.test_sipp_uac import trunk_config, until_exit
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


def to_tag(m: peers.SipMessage) -> str:
    found = re.search(r";\s*tag=([^;>\s]+)", m.header("To") or "")
    return found.group(1) if found else ""


@pytest_twisted.ensureDeferred
async def test_a_second_fork_answer_is_acked_and_byed_once(sipp_factory: Callable[..., peers.Sipp]) -> None:
    sipp = sipp_factory("uas_fork_2xx", rtp_echo=True)
    svc = start_telephony(trunk_config(sipp))
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "2020")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5), sipp.describe()

        def acks_b() -> int:
            return sum(1 for m in sipp.received() if m.method == "ACK" and to_tag(m).startswith("forkB"))

        assert await wait_for(lambda: acks_b() >= 4, 6), sipp.describe()
        await sleep(1.0)  # room for any (wrong) further ACK or BYE
        assert call.state is CallState.ANSWERED and leg.states.count("answered") == 1
        assert_tone(leg.recording(), 8000, 1000.0, "echo from fork A", seconds=1.0)
        call.hangup()
        assert await until_exit(sipp) == 0, sipp.describe()
        reqs = [(m.method, to_tag(m)) for m in sipp.received() if m.is_request]
        tag_a = to_tag(next(m for m in sipp.sent() if m.status == 180))
        assert tag_a and not tag_a.startswith("forkB")
        assert [r for r in reqs if r[1].startswith("forkB")] == [("ACK", reqs[2][1]), ("BYE", reqs[2][1])] + [("ACK", reqs[2][1])] * 3, reqs
        assert [r for r in reqs if r[1] == tag_a] == [("ACK", tag_a), ("BYE", tag_a)], reqs
        bye_b = next(m for m in sipp.received() if m.method == "BYE" and to_tag(m).startswith("forkB"))
        assert bye_b.header("Call-ID") == call.sip_call_id
        assert bye_b.first_line.startswith("BYE sip:forkb@")  # sent to fork B's own Contact
    finally:
        await svc.stopService()
