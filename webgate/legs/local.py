"""A local ingress leg: plays a tone (or PCM) into a call and records what comes back.

Used by the test harness, the benchmark and operators' smoke checks ("place a call
through the registry from inside the gateway"). It uses the same call model as the
WebRTC and RTMP legs, so everything behind it is the real path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webgate.calls.call import Call, CallState
from webgate.media.audio import PCM
from webgate.media.tones import ToneGenerator


class LocalLeg:
    kind = "local"

    def __init__(self, tone_hz: float | None = 1000.0, rate: int = 8000, client: str = "local", amplitude: float = 0.4) -> None:
        self.client = client
        self.rate = rate
        self.gen = ToneGenerator(tone_hz, rate, amplitude) if tone_hz else None
        self.states: list[str] = []
        self.dtmf: list[tuple[str, str]] = []
        self.received: list[PCM] = []
        self.received_rate: int | None = None
        self.ended: tuple[str, int | None] | None = None
        self.call: Call | None = None
        self._ticker: Any = None

    # IngressLeg
    def call_progress(self, call: Call, state: CallState) -> None:
        self.states.append(state.value)

    def call_ended(self, call: Call, cause: str, status: int | None) -> None:
        self.ended = (cause, status)
        self.stop_source()

    def dtmf_received(self, call: Call, digit: str, method: str) -> None:
        self.dtmf.append((digit, method))

    def audio_from_sip(self, call: Call, pcm: PCM, rate: int) -> None:
        self.received_rate = rate
        self.received.append(pcm)

    # source
    def start_source(self, call: Call) -> None:
        """Send 20 ms of tone on every tick of the gateway's media clock."""
        self.call = call
        if self.gen is None:
            return
        clock = call.manager.rtp_pool.clock
        gen = self.gen

        def tick(now: float) -> None:
            if call.state is CallState.ENDED:
                # also when the call was ended from this side (no call_ended callback then)
                self.stop_source()
                return
            call.send_audio(gen.frame(20), self.rate)

        self._ticker = tick
        clock.add_ticker(tick)

    def stop_source(self) -> None:
        if self._ticker is not None and self.call is not None:
            self.call.manager.rtp_pool.clock.remove_ticker(self._ticker)
            self._ticker = None

    def recording(self) -> PCM:
        if not self.received:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.received)
