"""The SIP codecs of issue 16 end to end through a trunk that allows only that codec, to a SIPp
UAS echoing our RTP (``-rtp_echo``), with a UDP relay of the test between the two capturing
what the gateway sends:

- the caller (a LocalLeg, and an ffmpeg RTMP publisher in Nellymoser) hears its own tone back
  through our encoder, SIPp's echo and our decoder (frequency measured);
- the payloads captured on the SIP side decode with Debian's ffmpeg (not PyAV's FFmpeg, not our
  decoders) to the same tone, so an encoder bug cannot hide behind our own decoder;
- G.729 at 10 and 30 ms packets (SIPp's answer's ptime), AMR/AMR-WB in both packings;
- the built-in echo and tone in each codec, with no PBX;
- a missing library (its ``[codecs]`` path wrong): the codec is not offered, check-config says so.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import protocol

from tests import require
from tests.adapters.rtmp_helpers import Gateway, ffmpeg
from tests.calls.gw import (
    assert_tone,
    make_config,
    reactor,
    sleep,
    start_telephony,
    wait_for,
)
from tests.interop import peers
from tests.media.ffmpeg_decode import decode_payloads
from webgate import cli
from webgate.calls.call import CallState
from webgate.calls.offers import sdp_codecs
from webgate.legs.local import LocalLeg
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs
from webgate.media.audio import Resampler
from webgate.media.codecs import set_library_paths
from webgate.proto import rtp, sdp

TONE_HZ = 700.0

#: (case id, trunk codec, SIPp's rtpmap, the fmtp of the offered format SIPp picks, ptime, PCM rate)
CASES = [
    ("G729-20", "G729", "G729/8000", "annexb=no", 20, 8000),
    ("G729-10", "G729", "G729/8000", "annexb=no", 10, 8000),
    ("G729-30", "G729", "G729/8000", "annexb=no", 30, 8000),
    ("AMR-octet", "AMR", "AMR/8000", "octet-align=1", 20, 8000),
    ("AMR-bandwidth-efficient", "AMR", "AMR/8000", None, 20, 8000),
    ("AMR-WB-octet", "AMR-WB", "AMR-WB/16000", "octet-align=1", 20, 16000),
    ("AMR-WB-bandwidth-efficient", "AMR-WB", "AMR-WB/16000", None, 40, 16000),
    ("G726-32", "G726-32", "G726-32/8000", None, 20, 8000),
    ("AAL2-G726-32", "AAL2-G726-32", "AAL2-G726-32/8000", None, 30, 8000),
    ("G723", "G723", "G723/8000", None, 30, 8000),
]

#: payload bytes of a packet of ``ms`` milliseconds (frame-concatenating codecs)
PAYLOAD_BYTES: dict[str, Callable[[int], int]] = {
    "G729": lambda ms: ms,  # 10 bytes per 10 ms frame
    "G726-32": lambda ms: 4 * ms,  # half a byte per 8 kHz sample
    "AAL2-G726-32": lambda ms: 4 * ms,
    "G723": lambda ms: 24 * ms // 30,  # 24 bytes per 30 ms frame at 6.3 kbit/s
}


class _Side(protocol.DatagramProtocol):
    def __init__(self, relay: Relay, name: str) -> None:
        self.relay, self.name = relay, name

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.received(self.name, data, addr)


class Relay:
    """A UDP relay: the gateway sends to ``port`` (what SIPp's SDP says), the relay forwards to
    SIPp's media port from a second socket, SIPp echoes to that socket, the relay sends it back
    to the gateway from ``port``. Every datagram from the gateway is kept in ``to_far``."""

    def __init__(self, far: tuple[str, int], loss: float = 0.0) -> None:
        self.far = far
        self.loss = loss  # the share of SIPp's packets (toward the gateway) dropped, netem-style
        self._rng = random.Random(20261203)
        self.dropped = 0
        self.gateway: tuple[str, int] | None = None
        self.to_far: list[bytes] = []
        self.from_far: list[bytes] = []
        self.near = reactor.listenUDP(0, _Side(self, "near"), interface="127.0.0.1")
        self.out = reactor.listenUDP(0, _Side(self, "out"), interface="127.0.0.1")
        self.port: int = self.near.getHost().port

    def received(self, side: str, data: bytes, addr: tuple[str, int]) -> None:
        if side == "near":
            self.gateway = addr
            self.to_far.append(data)
            self.out.write(data, self.far)
        elif self.gateway is not None and addr == self.far:
            self.from_far.append(data)
            if self.loss and not rtp.is_rtcp(data) and self._rng.random() < self.loss:
                self.dropped += 1
                return
            self.near.write(data, self.gateway)

    async def close(self) -> None:
        await self.near.stopListening()
        await self.out.stopListening()


def offered_pt(name: str, fmtp: str | None) -> int:
    """The payload type our offer gives the format (the same code path as the UAC's offer)."""
    offer = sdp.build_offer(sdp_codecs([name]) + [sdp.TELEPHONE_EVENT], "127.0.0.1", 9, 1)
    for c in offer.media[0].codecs():
        if c.name == name and (name == "opus" or (c.fmtp or None) == fmtp):  # Opus's fmtp is no format
            assert c.payload_type is not None
            return c.payload_type
    raise AssertionError(f"{name} {fmtp} not in our offer")


def trunk_setup(tmp_path: Path, sipp_factory: Callable[..., peers.Sipp], name: str, rtpmap: str,
                fmtp: str | None, ptime: int, loss: float = 0.0) -> tuple[peers.Sipp, Relay, int, dict[str, Any]]:
    media_port = peers.free_port_block(4, "udp", align=2)
    relay = Relay(("127.0.0.1", media_port), loss)
    pt = offered_pt(name, fmtp)
    scenario = peers.render_scenario("uas_codec_echo.xml", tmp_path / f"scen{relay.port}", MEDIA_PORT=relay.port, PT=pt,
                                     RTPMAP=rtpmap, FMTP=f"a=fmtp:{pt} {fmtp}" if fmtp else "a=x-no-fmtp",
                                     PTIME=ptime)
    sipp = sipp_factory(scenario, media_port=media_port, rtp_echo=True)
    extra = {
        "trunk": [{"name": "pbx", "target": f"sip:127.0.0.1:{sipp.port}", "codecs": [name]}],
        "route": [{"pattern": "1000", "trunk": "pbx", "public": True}],
    }
    return sipp, relay, pt, extra


def captured(relay: Relay, pt: int) -> list[rtp.RtpPacket]:
    packets = [rtp.RtpPacket.parse(d) for d in relay.to_far if not rtp.is_rtcp(d)]
    return [p for p in packets if p.payload_type == pt]


def check_wire(tmp_path: Path, name: str, fmtp: str | None, ptime: int, rate: int, packets: list[rtp.RtpPacket],
               what: str) -> float:
    """The gateway's packets: one packet time each, decoded by Debian's ffmpeg to the tone."""
    assert len(packets) > 50, f"{what}: only {len(packets)} packets reached the relay"
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)
             if b.sequence == (a.sequence + 1) & 0xFFFF}
    clock = 8000 if name != "AMR-WB" else 16000
    frame_ms = {"G723": 30}.get(name, 10 if name in ("G729", "G726-32", "AAL2-G726-32") else 20)
    want_ms = max(frame_ms, ptime // frame_ms * frame_ms)
    assert steps == {clock * want_ms // 1000}, f"{what}: timestamp steps {steps}, want {want_ms} ms packets"
    if name in PAYLOAD_BYTES:
        assert {len(p.payload) for p in packets} == {PAYLOAD_BYTES[name](want_ms)}, what
    pcm, got_rate = decode_payloads(name, [p.payload for p in packets], tmp_path, fmtp)
    assert got_rate == rate
    tail = pcm[len(pcm) // 3 :]
    freq = dominant_frequency(tail, rate)
    assert abs(freq - TONE_HZ) < 20, f"{what}: Debian ffmpeg decoded {freq:.1f} Hz from our payloads"
    assert rms_dbfs(tail) > -30, f"{what}: Debian ffmpeg decoded near silence"
    return freq


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case, name, rtpmap, fmtp, ptime, rate", CASES, ids=[c[0] for c in CASES])
@pytest_twisted.ensureDeferred
async def test_codec_through_a_trunk_to_sipp_echo(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path, ffmpeg_program: str,
                                                  case: str, name: str, rtpmap: str, fmtp: str | None, ptime: int,
                                                  rate: int) -> None:
    sipp, relay, pt, extra = trunk_setup(tmp_path, sipp_factory, name, rtpmap, fmtp, ptime)
    svc = start_telephony(make_config(extra))
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=TONE_HZ, rate=rate)
        call = svc.manager.place_call(leg, "1000")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 8), sipp.describe()
        offered = [c.name for c in call.offer_sdp.media[0].codecs() if not c.is_telephone_event]
        assert set(offered) == {name}  # the trunk allows only this codec
        assert call.codec == name and call.media_path == "frame" and call.stream is not None
        assert call.stream.media is not None and call.stream.media.codec.payload_type == pt
        await sleep(3.0)
        stats = call.stream.stats
        # the caller hears its tone: our encoder -> SIPp's echo -> our decoder
        assert_tone(leg.recording(), leg.received_rate or rate, TONE_HZ, f"{case}: the caller heard", seconds=1.5)
        assert stats.bad_packets == 0 and stats.packets_received > 60, stats
        packets = captured(relay, pt)
        freq = check_wire(tmp_path, name, fmtp, ptime, rate, packets, case)
        print(f"\n[{case}] {len(packets)} packets of {len(packets[0].payload)} bytes on the wire, Debian ffmpeg "
              f"decoded {freq:.1f} Hz; the caller heard {dominant_frequency(leg.recording()[-rate:], rate):.1f} Hz; "
              f"{len(relay.from_far)} echoed back")
        call.hangup()
        assert await wait_for(lambda: len(svc.registry) == 0, 5)
        assert await wait_for(lambda: "BYE" in sipp.received_requests(), 5), sipp.describe()
    finally:
        await svc.stopService()
        await relay.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", ["G729-20", "AMR-octet"])
@pytest_twisted.ensureDeferred
async def test_rtmp_nellymoser_caller_through_the_codec(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path,
                                                       ffmpeg_program: str, case: str) -> None:
    """ffmpeg publishes Nellymoser over RTMP, the trunk speaks only G.729 / AMR: transcoded both
    ways, ffmpeg plays the session back and hears its tone."""
    _, name, rtpmap, fmtp, ptime, rate = next(c for c in CASES if c[0] == case)
    sipp, relay, pt, extra = trunk_setup(tmp_path, sipp_factory, name, rtpmap, fmtp, ptime)
    gw = Gateway(extra)
    try:
        pub = ffmpeg("-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=44100:duration=8",
                     "-c:a", "nellymoser", "-ar", "16000", "-f", "flv", gw.url("call/1000"), timeout=30)
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), sipp.describe()
        call = next(iter(gw.svc.registry))
        assert call.ingress_kind == "rtmp" and call.codec == name and call.media_path == "frame"
        await sleep(1.0)
        wav = tmp_path / "back.wav"
        player = ffmpeg("-i", gw.url(f"session/{call.session_id}"), "-t", "3", "-ac", "1", "-y", str(wav), timeout=25)
        code, _, err = await player.wait()
        assert code == 0, err.decode(errors="replace")
        pcm, got_rate = read_wav(wav)
        tail = pcm[len(pcm) // 3 :]
        heard = dominant_frequency(tail, got_rate)
        freq = check_wire(tmp_path, name, fmtp, ptime, rate, captured(relay, pt), f"RTMP {case}")
        print(f"\n[RTMP nellymoser / {case}] the publisher's session played back at {heard:.1f} Hz "
              f"{rms_dbfs(tail):.1f} dBFS; Debian ffmpeg decoded {freq:.1f} Hz from the wire")
        assert abs(heard - TONE_HZ) < 20 and rms_dbfs(tail) > -35, (heard, rms_dbfs(tail))
        pub.kill()
        await pub.wait()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 8)
    finally:
        await gw.stop()
        await relay.close()


BUILTIN = [("G729", 8000), ("AMR", 8000), ("AMR-WB", 16000), ("G726-32", 8000), ("AAL2-G726-32", 8000), ("G723", 8000)]


@pytest.mark.parametrize("name, rate", BUILTIN)
@pytest_twisted.ensureDeferred
async def test_builtin_echo_and_tone_answer_the_codec(name: str, rate: int) -> None:
    """No PBX: the built-in echo returns the caller's payloads in the codec, the tone is encoded in it."""
    svc = start_telephony(make_config())
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=TONE_HZ, rate=rate)
        call = svc.manager.place_call(leg, "echo", prefer_codecs=[name])
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        assert call.codec == name and call.offer_sdp.media[0].codecs()[0].name == name
        tone_leg = LocalLeg(tone_hz=None)
        tone_call = svc.manager.place_call(tone_leg, "tone", prefer_codecs=[name])
        assert await wait_for(lambda: tone_call.state is CallState.ANSWERED, 5)
        assert tone_call.codec == name
        await sleep(2.0)
        assert_tone(leg.recording(), leg.received_rate or rate, TONE_HZ, f"echo in {name}", seconds=1.0)
        assert_tone(tone_leg.recording(), tone_leg.received_rate or rate, 1000.0, f"tone in {name}", seconds=0.8)
        assert call.stream is not None and call.stream.stats.bad_packets == 0
        call.hangup()
        tone_call.hangup()
        assert await wait_for(lambda: not svc.manager.builtin_calls and len(svc.registry) == 0, 3)
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_missing_library_is_not_offered_and_check_config_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = str(tmp_path / "lib" / "libbcg729.so.0")
    svc = start_telephony(make_config({"codecs": {"bcg729_library": absent}}))
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=TONE_HZ)
        call = svc.manager.place_call(leg, "echo", prefer_codecs=["G729", "PCMU"])
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 5)
        offered = {c.name for c in call.offer_sdp.media[0].codecs()}
        assert "G729" not in offered and "AMR" in offered  # only the absent library's codec is gone
        assert call.codec == "PCMU"
        await sleep(1.0)
        assert_tone(leg.recording(), 8000, TONE_HZ, "echo without G.729", seconds=0.5)
        call.hangup()
        assert await wait_for(lambda: len(svc.registry) == 0, 3)
    finally:
        await svc.stopService()
        set_library_paths({})
    conf = tmp_path / "webgate.toml"
    conf.write_text(f'[codecs]\nbcg729_library = "{absent}"\n\n'
                    '[[trunk]]\nname = "pbx"\ntarget = "sip:pbx.example.com"\ncodecs = ["G729", "PCMU"]\n')
    assert cli.main(["check-config", str(conf)]) == 1
    assert "trunk pbx: codec G729 needs libbcg729 (apt install libbcg729-0)" in capsys.readouterr().err


SPEECH_WAV = Path("/usr/share/sounds/linphone/hello16000.wav")  # Debian linphone-common (with linphone-cli)


class WavSource:
    """A LocalLeg source (``frame(ms)``): a recorded voice, looped."""

    def __init__(self, pcm: np.ndarray, rate: int) -> None:
        self.pcm, self.rate, self.pos = pcm, rate, 0

    def frame(self, ms: int = 20) -> np.ndarray:
        k = self.rate * ms // 1000
        idx = (self.pos + np.arange(k)) % len(self.pcm)
        self.pos += k
        return self.pcm[idx]


def lag_of(ref: np.ndarray, deg: np.ndarray, max_lag: int) -> int:
    """The shift (samples) that best aligns ``deg`` to ``ref`` (cross-correlation)."""
    n = len(ref) + len(deg)
    xc = np.fft.irfft(np.fft.rfft(ref.astype(float), n) * np.conj(np.fft.rfft(deg.astype(float), n)), n)
    lags = np.concatenate([xc[-max_lag:], xc[: max_lag + 1]])
    return int(np.argmax(lags)) - max_lag


def longest_hole_ms(clean: np.ndarray, lossy: np.ndarray, rate: int) -> int:
    """The longest run of 10 ms blocks that carry voice in the loss-free run and are silent in the
    lossy one (aligned), in ms: a loss heard as a hole."""
    n = rate // 100
    m = min(len(clean), len(lossy)) // n * n
    loud = np.abs(clean[:m].astype(np.int32)).reshape(-1, n).max(axis=1) > 500
    quiet = np.abs(lossy[:m].astype(np.int32)).reshape(-1, n).max(axis=1) < 100
    longest = run = 0
    for hole in loud & quiet:
        run = run + 1 if hole else 0
        longest = max(longest, run)
    return longest * 10


async def _lossy_run(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path, codec: str, rtpmap: str,
                     fmtp: str | None, loss: float, seconds: float, voice: np.ndarray) -> tuple[np.ndarray, Any]:
    sipp, relay, _pt, extra = trunk_setup(tmp_path, sipp_factory, codec, rtpmap, fmtp, 20, loss)
    svc = start_telephony(make_config(extra))
    try:
        assert svc.manager is not None
        leg = LocalLeg(tone_hz=None, rate=16000)
        leg.gen = WavSource(voice, 16000)  # type: ignore[assignment]
        call = svc.manager.place_call(leg, "1000")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 8), sipp.describe()
        assert call.codec == codec and call.stream is not None
        await sleep(seconds + 1.0)
        stats = call.stream.stats
        pcm = leg.recording()
        rate = leg.received_rate or 16000
        if rate != 16000:
            pcm = Resampler(rate, 16000).resample(pcm)
        call.hangup()
        assert await wait_for(lambda: len(svc.registry) == 0, 5)
        return pcm[16000:][: int(16000 * seconds)], (stats, relay.dropped, len(relay.from_far))
    finally:
        await svc.stopService()
        await relay.close()


LOSS_CASES = [
    ("opus-fec", "opus", "opus/48000/2", "minptime=10;useinbandfec=1", 3.0),
    ("opus-plc", "opus", "opus/48000/2", "minptime=10", 2.5),
    ("PCMU", "PCMU", "PCMU/8000", None, 2.2),
]


@pytest.mark.serial  # PESQ and silent-hole figures: a busy CPU adds holes of its own
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case, codec, rtpmap, fmtp, min_pesq", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
@pytest_twisted.ensureDeferred
async def test_five_percent_loss_is_concealed(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path, case: str,
                                             codec: str, rtpmap: str, fmtp: str | None, min_pesq: float) -> None:
    """5 % of SIPp's echoed packets dropped by the relay (netem-style, seeded): where the loss-free
    run has voice the lossy one has no silent hole over 40 ms (Opus: libopus concealment, and FEC
    from the next packet when SIPp's answer says useinbandfec=1, so that our encoder sends it;
    G.711: repeat and fade), and ITU-T P.862 PESQ (wideband) against the loss-free run stays above
    ``min_pesq`` (figures in docs/performance.md)."""
    pesq = require.require_module("pesq", "pesq")
    if not SPEECH_WAV.is_file():
        require.missing(str(SPEECH_WAV), "linphone-common")
    voice, rate = read_wav(SPEECH_WAV)
    assert rate == 16000
    seconds = 8.0
    clean, (clean_stats, _, _) = await _lossy_run(sipp_factory, tmp_path / "clean", codec, rtpmap, fmtp, 0.0,
                                                  seconds, voice)
    lossy, (stats, dropped, echoed) = await _lossy_run(sipp_factory, tmp_path / "lossy", codec, rtpmap, fmtp, 0.05,
                                                       seconds, voice)
    assert clean_stats.concealed == 0
    assert 0.02 * echoed < dropped < 0.09 * echoed, (dropped, echoed)
    assert stats.concealed >= dropped * 0.8, (stats, dropped)
    lag = lag_of(clean, lossy, 8000)
    clean, lossy = (clean[lag:], lossy) if lag > 0 else (clean, lossy[-lag:])
    n = min(len(clean), len(lossy))
    hole = longest_hole_ms(clean[:n], lossy[:n], 16000)
    score = pesq.pesq(16000, clean[:n].astype(np.float32), lossy[:n].astype(np.float32), "wb")
    print(f"\n[{case}, 5 % loss] {dropped} of {echoed} packets dropped, {stats.concealed} concealed, "
          f"{stats.recovered} rebuilt by FEC; longest hole {hole} ms; PESQ (wb, against the loss-free run) {score:.2f}")
    assert hole <= 40, f"a silent hole of {hole} ms where the loss-free run has voice"
    if case == "opus-fec":
        # single losses rebuilt from the next packet (libopus sends no FEC data for pauses)
        assert stats.recovered > dropped // 2, (stats, dropped)
    else:
        assert stats.recovered == 0  # no FEC data sent: concealed
    assert score > min_pesq, score


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", ["G729-20", "AMR-WB-octet"])
@pytest_twisted.ensureDeferred
async def test_webrtc_opus_caller_through_the_codec(sipp_factory: Callable[..., peers.Sipp], tmp_path: Path,
                                                   ffmpeg_program: str, case: str) -> None:
    """A WebRTC caller (aiortc, offering only Opus) through a G.729 / AMR-WB-only trunk: Opus
    decoded, resampled, encoded in the trunk's codec and back; the caller hears its tone and
    Debian ffmpeg decodes the wire's payloads to it."""
    from tests.adapters.webrtc_client import Browser, close_all, complete_call, connect
    from tests.adapters.webrtc_client import Gateway as WebGateway

    _, name, rtpmap, fmtp, ptime, rate = next(c for c in CASES if c[0] == case)
    _sipp, relay, pt, extra = trunk_setup(tmp_path, sipp_factory, name, rtpmap, fmtp, ptime)
    gw = WebGateway(extra)
    browser = Browser(tone_hz=TONE_HZ, codecs=["opus"])
    ws = None
    try:
        ws = await connect(gw.url)
        answered = await complete_call(ws, browser, {"type": "call", "destination": "1000"}, timeout=10)
        assert answered["codec"] == "opus"  # the browser's side
        (call,) = list(gw.svc.registry)
        assert call.media_path == "frame" and call.codec == name
        heard, level = await browser.heard(seconds=3, timeout=12, tail_s=1.5)
        freq = check_wire(tmp_path, name, fmtp, ptime, rate, captured(relay, pt), f"WebRTC {case}")
        print(f"\n[WebRTC opus / {case}] the browser heard {heard:.1f} Hz {level:.1f} dBFS; Debian ffmpeg "
              f"decoded {freq:.1f} Hz from the wire")
        assert abs(heard - TONE_HZ) < 20 and level > -35, (heard, level)
        ws.send({"type": "hangup"})
        await ws.next("ended", cause="client_hangup")
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await close_all(gw, browser, ws)
        await relay.close()
