"""RTP injection ("RTP bleed") into a live call, on real sockets: [rtp] strict_source.

An attacker who can reach the gateway's RTP port range sends valid RTP (the call's payload
type, plausible sequence numbers, timestamps and SSRC) at a call's SIP-side RTP port. Before
strict source, the gateway accepted RTP from anyone: the caller heard the attacker. Now the
caller hears only the far end, the drops are counted per call (``/api/calls/{id}``
``from_sip.dropped`` / ``rtcp_dropped``) and in ``/metrics``
(``webgate_rtp_source_dropped_total``), and a re-INVITE that moves the far end's media is still
followed (the source is learnt again) while the attacker keeps sending.

- ``test_injection_at_the_calls_sip_side_port_is_not_heard``: the gateway's own ``echo`` (a
  LocalLeg playing 1 kHz calls the built-in echo through the SIP stack on loopback); the attacker
  sends a 3 kHz tone at the call's SIP-side RTP port, then forged RTCP at its RTCP port.
- ``test_injection_at_the_far_ends_port_is_not_echoed``: the same at the echo's own port.
- ``test_reinvite_moving_the_far_end_is_followed_under_injection``: SIPp answers and echoes RTP
  (``-rtp_echo``), then re-INVITEs with its media moved to another port
  (scenarios/uas_update_reinvite_new_addr.xml); the attacker sends all along.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import pytest_twisted

from tests.calls.gw import process_exit, sleep, wait_for
from tests.interop import peers
from tests.ops.helpers import ADMIN_KEY, RunningGateway, api, http, local_call, start_gateway
from webgate.media.analysis import dominant_frequency, rms_dbfs
from webgate.media.codecs import create_encoder
from webgate.media.tones import ToneGenerator
from webgate.proto import rtp

CALLER_HZ = 1000.0
ATTACK_HZ = 3000.0
RATE = 8000


def band_share(pcm: np.ndarray, hz: float, width: float = 60.0) -> float:
    """Share of the signal's energy within +-width Hz of ``hz``."""
    x = pcm.astype(np.float64)
    x -= x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / RATE)
    band = (freqs > hz - width) & (freqs < hz + width)
    return float(spec[band].sum() / max(spec.sum(), 1e-12))


class Injector:
    """A second socket that sends a 3 kHz PCMU tone as valid RTP (PT 0, 20 ms, its own random
    SSRC, sequence number and timestamp running on) at one or more of the gateway's ports, from a
    thread, until stopped."""

    def __init__(self, targets: list[tuple[str, int]]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.targets = targets
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        enc = create_encoder("PCMU")
        gen = ToneGenerator(ATTACK_HZ, RATE, 0.5)
        ssrc = random.getrandbits(32)
        seq, ts = random.getrandbits(16), random.getrandbits(32)
        t0 = time.monotonic()
        n = 0
        while not self._stop.is_set():
            payloads = enc.encode(gen.generate(160))
            for p in payloads if isinstance(payloads, list) else [payloads]:
                data = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes(p)
                for dest in self.targets:
                    self.sock.sendto(data, dest)
                    self.sent += 1
                seq += 1
                ts += 160
            n += 1
            self._stop.wait(max(0.0, t0 + n * 0.02 - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def close(self) -> None:
        self.stop()
        self.sock.close()


def recorded_since(leg: Any, start: int) -> np.ndarray:
    return np.concatenate(leg.received[start:]) if len(leg.received) > start else np.zeros(0, dtype=np.int16)


def assert_only_the_caller(pcm: np.ndarray, what: str, seconds: float) -> None:
    """``pcm`` (``seconds`` of what the caller heard) is the caller's own 1 kHz, clean: no 3 kHz,
    and not cut up (an injector's packets used to reset the jitter buffer at every foreign SSRC)."""
    n = len(pcm)
    assert n >= RATE * seconds * 0.8, f"{what}: the caller's audio was disrupted: {n} samples in {seconds:.1f} s"
    f = dominant_frequency(pcm, RATE)
    own, attack = band_share(pcm, CALLER_HZ), band_share(pcm, ATTACK_HZ)
    print(f"[{what}] {n} samples, dominant {f:.1f} Hz, 1 kHz share {own:.3f}, 3 kHz share {attack:.5f}, {rms_dbfs(pcm):.1f} dBFS")
    assert attack < 0.005, f"{what}: the injected 3 kHz tone reached the caller (share {attack:.3f}; dominant {f:.1f} Hz)"
    assert abs(f - CALLER_HZ) < 20 and own > 0.8 and rms_dbfs(pcm) > -25, f"{what}: the caller's own 1 kHz is not clean"


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{([^}]*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    raise AssertionError(f"no {name}{labels} in /metrics")


def forged_rtcp(sender_ssrc: int) -> bytes:
    """A receiver report claiming huge loss on what the gateway sends (it would poison to_sip.lost)."""
    block = rtp.ReportBlock(ssrc=sender_ssrc, fraction_lost=200, cumulative_lost=54321, highest_sequence=1, jitter=0)
    return rtp.serialize_rtcp([rtp.ReceiverReport(ssrc=random.getrandbits(32), reports=(block,))])


async def echo_call(gw: RunningGateway) -> tuple[Any, Any, Any]:
    """A LocalLeg playing 1 kHz calls the built-in echo; (call, leg, the echo's BuiltinCall),
    once the caller hears itself."""
    call, leg = await local_call(gw, "echo", tone_hz=CALLER_HZ)
    (echo,) = gw.manager.builtin_calls.values()
    assert call.rtp is not None and call.stream is not None
    await sleep(1.0)
    assert_only_the_caller(recorded_since(leg, 0)[-RATE // 2 :], "before", 0.5)
    return call, leg, echo


async def attack(leg: Any, inj: Injector, seconds: float) -> np.ndarray:
    """Inject for ``seconds``; what the caller heard meanwhile (the first 0.25 s, still in the
    jitter buffer when the attack started, left out)."""
    start = len(leg.received)
    inj.start()
    await sleep(seconds)
    inj.stop()
    print(f"\n[attack] {inj.sent} injected packets")
    return recorded_since(leg, start)[RATE // 4 :]


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_injection_at_the_calls_sip_side_port_is_not_heard() -> None:
    gw: RunningGateway = start_gateway()
    inj: Injector | None = None
    try:
        call, leg, echo = await echo_call(gw)
        sid, port = call.session_id, call.rtp.rtp_port
        # the attack: a 3 kHz tone at the gateway's RTP port of the call's SIP leg (what the caller hears)
        inj = Injector([("127.0.0.1", port)])
        heard = await attack(leg, inj, 3.0)
        assert_only_the_caller(heard, "under attack", 2.5)
        # forged RTCP (huge loss on what the gateway sends) at the call's RTCP port, and multiplexed on its RTP port
        forged = forged_rtcp(call.stream.sender.ssrc)
        for _ in range(5):
            inj.sock.sendto(forged, ("127.0.0.1", call.rtp.rtcp_port))
            inj.sock.sendto(forged, ("127.0.0.1", port))
        await sleep(0.3)

        # counted per call, and in /metrics
        status, one = await api("GET", gw.url(f"/api/calls/{sid}"))
        assert status == 200, one
        print(f"[api] from_sip {one['from_sip']} to_sip {one['to_sip']}")
        assert one["to_sip"]["lost"] != 54321, one["to_sip"]  # the forged reports were not taken
        assert one["from_sip"]["dropped"] >= inj.sent * 0.95, one["from_sip"]
        assert one["from_sip"]["rtcp_dropped"] == 10, one["from_sip"]
        _, _, body = await http("GET", gw.url("/metrics"), key=ADMIN_KEY)
        text = body.decode()
        assert metric(text, "webgate_rtp_source_dropped_total", kind="rtp", reason="foreign") >= inj.sent * 0.95
        assert metric(text, "webgate_rtp_source_dropped_total", kind="rtcp", reason="foreign") == 10
        assert call.stream.source_guard.locked == ("127.0.0.1", echo.endpoint.rtp_port)

        call.hangup()
        assert await wait_for(lambda: call.ended and not gw.manager.builtin_calls, 5)
        # released streams still count
        _, _, body = await http("GET", gw.url("/metrics"), key=ADMIN_KEY)
        assert metric(body.decode(), "webgate_rtp_source_dropped_total", kind="rtp", reason="foreign") >= inj.sent * 0.95
    finally:
        if inj is not None:
            inj.close()
        await gw.stop()


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_injection_at_the_far_ends_port_is_not_echoed() -> None:
    """The echo's own RTP port (the far end of the call, also the gateway's): an injection there
    used to be echoed back to the caller."""
    gw: RunningGateway = start_gateway()
    inj: Injector | None = None
    try:
        call, leg, echo = await echo_call(gw)
        inj = Injector([("127.0.0.1", echo.endpoint.rtp_port)])
        heard = await attack(leg, inj, 3.0)
        assert_only_the_caller(heard, "under attack", 2.5)
        guard = echo.endpoint.stream.source_guard
        assert guard.dropped_foreign >= inj.sent * 0.95 and guard.locked == ("127.0.0.1", call.rtp.rtp_port)
        _, _, body = await http("GET", gw.url("/metrics"), key=ADMIN_KEY)
        assert metric(body.decode(), "webgate_rtp_source_dropped_total", kind="rtp", reason="foreign") >= inj.sent * 0.95
        call.hangup()
    finally:
        if inj is not None:
            inj.close()
        await gw.stop()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_reinvite_moving_the_far_end_is_followed_under_injection(sipp_factory: Callable[..., peers.Sipp]) -> None:
    # SIPp answers, echoes RTP on -mp, and after 5 s re-INVITEs with its media on -mp + 2
    sipp = sipp_factory("uas_update_reinvite_new_addr", duration_ms=5000, rtp_echo=True)
    gw = start_gateway(
        {
            "trunk": [{"name": "sipp", "target": f"sip:127.0.0.1:{sipp.port}", "codecs": ["PCMU"]}],
            "route": [{"pattern": "1000", "trunk": "sipp", "public": True}],
        }
    )
    inj: Injector | None = None
    try:
        call, leg = await local_call(gw, "1000", tone_hz=CALLER_HZ)
        t_answer = time.monotonic()
        assert call.rtp is not None and call.stream is not None
        first, moved = ("127.0.0.1", sipp.media_port), ("127.0.0.1", sipp.media_port + 2)
        await sleep(0.5)
        assert call.stream.remote == first

        inj = Injector([("127.0.0.1", call.rtp.rtp_port)])
        start = len(leg.received)
        inj.start()
        seconds = max(0.5, 4.0 - (time.monotonic() - t_answer))
        await sleep(seconds)
        assert call.stream.remote == first  # no re-INVITE yet
        assert_only_the_caller(recorded_since(leg, start)[RATE // 4 :], "SIPp echo, under attack", seconds - 0.5)
        guard = call.stream.source_guard
        assert guard.locked == first
        dropped_before = guard.dropped_foreign
        assert dropped_before > 50

        # SIPp's re-INVITE moves its media to mp + 2: sent there at once, learnt again from there
        assert await wait_for(lambda: call.stream is not None and call.stream.remote == moved, 10), sipp.describe()
        assert await wait_for(lambda: guard.locked == moved, 2), (guard.locked, guard.state)
        print(f"\n[re-INVITE] relearns {guard.relearns}, locked to {guard.locked}, locks {guard.locks}")
        assert guard.relearns == 1 and not guard.provisional
        start = len(leg.received)
        await sleep(2.0)
        assert_only_the_caller(recorded_since(leg, start)[RATE // 4 :], "after the re-INVITE, under attack", 1.5)
        assert guard.locked == moved and guard.dropped_foreign > dropped_before + 50
        inj.stop()
        status, one = await api("GET", gw.url(f"/api/calls/{call.session_id}"))
        assert status == 200 and one["from_sip"]["dropped"] == guard.dropped_foreign > 100, one["from_sip"]

        call.hangup()
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
    finally:
        if inj is not None:
            inj.close()
        await gw.stop()


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_rtp_config_reaches_every_stream() -> None:
    """[rtp] strict_source / relearn_after_s reach the call's stream and the built-in's."""
    gw = start_gateway({"rtp": {"strict_source": False, "relearn_after_s": 7}})
    try:
        call, _leg = await local_call(gw, "echo", tone_hz=CALLER_HZ)
        (echo,) = gw.manager.builtin_calls.values()
        for stream in (call.stream, echo.endpoint.stream):
            g = stream.source_guard
            assert (g.strict, g.relearn_after_s, g.state) == (False, 7, "permissive")
        call.hangup()
    finally:
        await gw.stop()
