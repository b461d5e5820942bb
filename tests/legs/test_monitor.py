"""Supervisor audio (webgate/legs/monitor.py, issue 14): the call's two directions mixed, only
while the hub has an audio watcher. Driven without a network: a fake call whose SIP codec is
PCMU (or Opus), a fake media clock, the tap points of ``Call`` and ``MediaPaths`` fed with
tones, and the mixed frames measured (two tones of different frequencies, both present)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from webgate.calls.call import Call
from webgate.legs.hub import MediaHub, attach_hub
from webgate.legs.monitor import FRAME, MIX_RATE, CallMonitor
from webgate.media.codecs import create_encoder, get_codec, ulaw_encode
from webgate.media.tones import ToneGenerator

WEB_HZ, SIP_HZ = 660.0, 1000.0


class Ticks:
    """The media clock: tickers called by hand."""

    def __init__(self) -> None:
        self.tickers: list[Any] = []

    def add_ticker(self, fn: Any) -> None:
        self.tickers.append(fn)

    def remove_ticker(self, fn: Any) -> None:
        self.tickers.remove(fn)

    def tick(self, now: float) -> None:
        for fn in list(self.tickers):
            fn(now)


def fake_call(codec: str = "PCMU") -> Any:
    clock = Ticks()
    return SimpleNamespace(
        session_id="12345678", monitor=None, hub=None, grant=None,
        manager=SimpleNamespace(rtp_pool=SimpleNamespace(clock=clock)),
        stream=SimpleNamespace(codec=get_codec(codec)),
    )


def band_share(pcm: np.ndarray, rate: int, hz: float, width: float = 25.0) -> float:
    """The share of ``pcm``'s energy within ``hz`` ± ``width``."""
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm)))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1.0 / rate)
    return float(spec[np.abs(freqs - hz) <= width].sum() / max(spec.sum(), 1e-9))


class AudioWatcher:
    wants = "rtp"
    identity = "supervisor"

    def __init__(self, audio: bool = True) -> None:
        self.audio = audio
        self.pcm: list[np.ndarray] = []
        self.rates: set[int] = set()

    def video_started(self, *a: Any) -> None: ...
    def rtp_video(self, p: Any) -> None: ...
    def flv_video(self, t: Any) -> None: ...
    def data(self, label: str, data: Any) -> None: ...
    def ended(self, cause: str) -> None: ...

    def audio_pcm(self, pcm: np.ndarray, rate: int) -> None:
        self.pcm.append(pcm)
        self.rates.add(rate)


class Caller:
    def watchers_changed(self, n: int) -> None: ...
    def data_to_caller(self, *a: Any) -> None: ...
    def request_keyframe(self) -> None: ...
    def limit_bitrate(self, bps: int) -> None: ...


def test_mix_of_a_packet_path_call_has_both_parties_tones() -> None:
    call = fake_call("PCMU")
    out: list[np.ndarray] = []
    mon = CallMonitor(call, lambda pcm, rate: out.append(pcm))
    mon.start()
    assert call.monitor is mon and call.manager.rtp_pool.clock.tickers == [mon.tick]
    web = ToneGenerator(WEB_HZ, 8000, 0.3)
    sip = ToneGenerator(SIP_HZ, 8000, 0.3)
    now = 10.0
    for _ in range(100):  # 2 s: G.711 payloads both ways, as the packet path hands them over
        mon.web_payload(ulaw_encode(web.frame(20)))
        mon.sip_payload(ulaw_encode(sip.frame(20)))
        call.manager.rtp_pool.clock.tick(now)
        now += 0.02
    assert len(out) == 100 and all(len(f) == FRAME for f in out)
    tail = np.concatenate(out[-50:])
    assert band_share(tail, MIX_RATE, WEB_HZ) > 0.3 and band_share(tail, MIX_RATE, SIP_HZ) > 0.3
    assert np.abs(tail.astype(np.int32)).max() > 10000  # two tones of 0.3 full scale summed
    mon.stop()
    assert call.monitor is None and call.manager.rtp_pool.clock.tickers == []


def test_frame_path_pcm_at_other_rates_and_opus_payloads() -> None:
    call = fake_call("OPUS")
    out: list[np.ndarray] = []
    mon = CallMonitor(call, lambda pcm, rate: out.append(pcm))
    mon.start()
    enc = create_encoder(get_codec("OPUS"))
    web = ToneGenerator(WEB_HZ, 48000, 0.3)
    sip = ToneGenerator(SIP_HZ, 8000, 0.3)
    now = 0.0
    for _ in range(100):
        for p in enc.encode(web.frame(20)):
            mon.web_payload(p)  # the caller's Opus relayed to an Opus trunk
        mon.sip_pcm(sip.frame(20), 8000)  # decoded SIP audio (frame path)
        call.manager.rtp_pool.clock.tick(now)
        now += 0.02
    tail = np.concatenate(out[-50:])
    assert band_share(tail, MIX_RATE, WEB_HZ) > 0.25 and band_share(tail, MIX_RATE, SIP_HZ) > 0.25


def test_a_late_clock_gets_one_frame_per_20_ms_and_silence_when_nothing_comes() -> None:
    call = fake_call()
    out: list[np.ndarray] = []
    mon = CallMonitor(call, lambda pcm, rate: out.append(pcm))
    mon.start()
    mon.tick(1.0)
    mon.tick(1.1)  # 100 ms late: 5 frames, not 1
    assert len(out) == 6 and not any(f.any() for f in out)
    mon.tick(5.0)  # a long stall: resynchronised, no burst of 200 frames
    assert len(out) == 7
    # a burst beyond MAX_BUFFER_MS is cut: monitoring never lags the call by more
    for _ in range(50):
        mon.sip_payload(b"\x00" * 160)
    mon.tick(5.02)
    assert mon.sip.dropped_ms >= 800


def test_the_hub_runs_the_mixer_only_while_an_audio_watcher_is_present() -> None:
    call = fake_call()
    hub = attach_hub(call, Caller())
    assert isinstance(hub, MediaHub) and hub.monitor is None
    agent = AudioWatcher(audio=False)
    hub.add_watcher(agent)
    assert hub.monitor is None and call.monitor is None  # video/data watchers cost no audio work
    sup = AudioWatcher()
    hub.add_watcher(sup)
    assert isinstance(hub.monitor, CallMonitor) and call.monitor is hub.monitor
    assert hub.snapshot()["video"]["audio_watchers"] == 1
    sip = ToneGenerator(SIP_HZ, 8000, 0.3)
    for i in range(20):
        call.monitor.sip_payload(ulaw_encode(sip.frame(20)))
        call.manager.rtp_pool.clock.tick(i * 0.02)
    assert len(sup.pcm) == 20 and sup.rates == {MIX_RATE} and agent.pcm == []
    hub.remove_watcher(sup)
    assert hub.monitor is None and call.monitor is None and call.manager.rtp_pool.clock.tickers == []
    hub.add_watcher(sup)
    assert call.monitor is not None
    hub.close("client_hangup")
    assert hub.monitor is None and call.monitor is None


def test_call_tap_points_feed_the_monitor_only_when_set() -> None:
    """``Call.send_payload``/``send_audio`` hand the monitor what they send toward SIP."""
    sent: list[Any] = []
    stream = SimpleNamespace(send_payload=lambda p, s: sent.append(p), send_pcm=lambda pcm, r: sent.append(r))
    leg = SimpleNamespace(kind="test", client="c")
    call = Call(SimpleNamespace(), leg, "12345678", SimpleNamespace(destination="echo"))
    call.stream = stream
    call.send_payload(b"\xff" * 160, 160)
    got: list[Any] = []
    call.monitor = SimpleNamespace(web_payload=got.append, web_pcm=lambda pcm, rate: got.append(rate))
    call.send_payload(b"\x7f" * 160, 160)
    call.send_audio(np.zeros(320, np.int16), 16000)
    assert got == [b"\x7f" * 160, 16000] and len(sent) == 3


class AudioSink:
    """A fake RTMP watch stream (webgate.legs.rtmp_watch.WatchSink) that records audio too."""

    def __init__(self) -> None:
        self.open = True
        self.out: list[tuple[Any, ...]] = []

    def writable(self) -> bool:
        return True

    def accept(self, metadata: Any) -> None:
        self.out.append(("accept", metadata))

    def send_video(self, ts: int, body: bytes) -> None:
        self.out.append(("video", ts, body))

    def send_data(self, ts: int, name: str, value: Any) -> None:
        self.out.append(("data", ts, name, value))

    def send_audio(self, ts: int, data: bytes) -> None:
        self.out.append(("audio", ts, data))

    def end(self, cause: str) -> None:
        self.out.append(("end", cause))


def test_an_rtmp_audio_watcher_gets_the_mix_in_its_codec_from_0() -> None:
    from webgate.legs.rtmp_watch import RtmpWatcher
    from webgate.media.codecs import ulaw_decode

    sink = AudioSink()
    w = RtmpWatcher(sink, audio_codec="pcmu")  # type: ignore[arg-type]
    assert w.audio and w.metadata is not None
    assert w.metadata["hasAudio"] is True and w.metadata["audiocodecid"] == 8 and w.metadata["hasVideo"] is False
    tone = ToneGenerator(SIP_HZ, MIX_RATE, 0.3)
    w.audio_pcm(tone.frame(20), MIX_RATE)  # before the play is answered: dropped
    assert sink.out == []
    w.begin()
    assert sink.out == [("accept", w.metadata)]
    for _ in range(50):
        w.audio_pcm(tone.frame(20), MIX_RATE)
    audio = [o for o in sink.out if o[0] == "audio"]
    assert [o[1] for o in audio] == [20 * i for i in range(50)]  # the play's clock, from 0
    assert all(o[2][0] >> 4 == 8 for o in audio)  # FLV G.711 µ-law
    pcm = np.concatenate([ulaw_decode(o[2][1:]) for o in audio])
    assert band_share(pcm[-4000:], 8000, SIP_HZ) > 0.8
    # the caller's video starts later: onMetaData keeps the audio fields
    w.video_started("H264", 320, 240)
    md = sink.out[-1][3]
    assert md["hasAudio"] is True and md["hasVideo"] is True and md["audiocodecid"] == 8
    w.ended("client_hangup")
    w.audio_pcm(tone.frame(20), MIX_RATE)
    assert sink.out[-1] == ("end", "client_hangup")
