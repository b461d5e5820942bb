"""The RTMP leg's call control (webgate/legs/rtmp.py) without a connection: placing a call, hold
and its undo when the far end refuses, and the encoder-style calls by destination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from webgate.calls.errors import CallRefused
from webgate.legs.rtmp import LiveLegs, RtmpLeg
from webgate.legs.rtmp_audio import essential_tag


class FakeClock:
    def __init__(self) -> None:
        self.tickers: list[Callable[[float], None]] = []

    def add_ticker(self, fn: Callable[[float], None]) -> None:
        self.tickers.append(fn)

    def remove_ticker(self, fn: Callable[[float], None]) -> None:
        self.tickers.remove(fn)


class FakeManager:
    def __init__(self, refuse: CallRefused | None = None) -> None:
        self.rtp_pool = type("Pool", (), {"clock": FakeClock()})()
        self.refuse = refuse
        self.placed: list[tuple[Any, ...]] = []
        self.holds: list[tuple[bool, Callable[[bool, int | None], None]]] = []

    def place_call(self, leg: RtmpLeg, destination: str, **kw: Any) -> Any:
        if self.refuse is not None:
            raise self.refuse
        self.placed.append((destination, kw))
        return FakeCall(self)

    def hold(self, call: Any, on: bool, done: Callable[[bool, int | None], None]) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.holds.append((on, done))


class FakeCall:
    def __init__(self, manager: FakeManager) -> None:
        self.manager = manager
        self.ended = False
        self.held = False
        self.session_id = "12345678"
        self.grant = None
        self.hub = None


def test_place_attaches_the_call_to_the_media_clock() -> None:
    mgr = FakeManager()
    leg = RtmpLeg("127.0.0.1:1935", label="echo")
    call = leg.place(mgr, "echo", session_id=None, display_name=None, token=None, source_ip="127.0.0.1")
    assert leg.call is call and mgr.placed == [("echo", {"session_id": None, "display_name": None, "token": None,
                                                         "source_ip": "127.0.0.1"})]
    assert len(mgr.rtp_pool.clock.tickers) == 1
    with pytest.raises(CallRefused):
        RtmpLeg("x").place(FakeManager(CallRefused("invalid_destination", "no")), "?", session_id=None,
                           display_name=None, token=None, source_ip="127.0.0.1")


def test_hold_mutes_at_once_and_is_undone_when_refused() -> None:
    mgr = FakeManager()
    leg = RtmpLeg("c")
    call = leg.place(mgr, "1000", session_id=None, display_name=None, token=None, source_ip="127.0.0.1")
    results: list[bool] = []
    leg.hold(True, results.append)
    assert leg.on_hold and leg.audio_in.muted
    (on, done), = mgr.holds
    done(False, 488)  # the far end refused the re-INVITE: the hold in effect (none) again
    assert results == [False] and not leg.on_hold
    leg.hold(True, results.append)
    call.held = True
    mgr.holds[-1][1](True, 200)
    assert results == [False, True] and leg.on_hold
    mgr.refuse = CallRefused("hold_pending", "a re-INVITE is pending")
    with pytest.raises(CallRefused):
        leg.hold(False, results.append)
    assert leg.on_hold  # restored to call.held


def test_live_legs_by_destination() -> None:
    live = LiveLegs()
    mgr = FakeManager()
    a, b = RtmpLeg("a"), RtmpLeg("b")
    for leg in (a, b):
        leg.place(mgr, "2000", session_id=None, display_name=None, token=None, source_ip="127.0.0.1")
        live.add("2000", leg)
    assert live.latest("2000") is b and live.latest("3000") is None
    assert b.call is not None
    b.call.ended = True
    assert live.latest("2000") is a
    live.discard(a)
    live.discard(b)
    assert live == {}


def test_the_aac_sequence_header_is_essential() -> None:
    assert essential_tag(bytes([0xAF, 0x00, 0x14, 0x08]))
    assert not essential_tag(bytes([0xAF, 0x01, 0x21]))
