"""Speex against a third-party SIP phone: linphonec (Debian package ``linphone-cli``, whose
mediastreamer2 has Speex narrowband and wideband) answers a call from the gateway with only
speex/16000 (or speex/8000) enabled, plays a 440 Hz WAV and records what it decodes. A LocalLeg
sends 1000 Hz through libspeex on our side; both directions are measured.

linphonec is scripted through its stdin (``soundcard use files``, ``play``, ``record``,
``codec disable``), auto-answers (``-a``) and runs in its own temp directory; it is stopped by PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.calls.gw import assert_tone, make_config, sleep, start_telephony, wait_for
from tests.interop import peers
from tests.require import require_program
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg

PHONE_HZ = 440.0

RC = """[sip]
sip_port={sip_port}
sip_tcp_port=0
sip_tls_port=0
guess_hostname=0
use_ipv6=0
register_only_when_network_is_up=0
[rtp]
audio_rtp_port={rtp_port}
audio_jitt_comp=60
[sound]
echocancellation=0
"""


class Linphonec:
    """One linphonec with a generated config, commands on stdin, output to a log file."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "linphone"
        (self.dir / ".local/share/linphone").mkdir(parents=True, exist_ok=True)  # its database (HOME=dir)
        self.sip_port = peers.free_port("both")
        self.rtp_port = peers.free_port_block(2, "udp", align=2)
        (self.dir / "rc").write_text(RC.format(sip_port=self.sip_port, rtp_port=self.rtp_port))
        self.log = self.dir / "linphonec.out"
        self.wav = self.dir / "tone440.wav"
        peers.make_tone_wav(self.wav, PHONE_HZ, 16000, 10.0)
        self.rec = self.dir / "rec.wav"
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["linphonec", "-c", str(self.dir / "rc"), "-a", "-d", "0"],
            stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT, text=True,
            cwd=self.dir, env={**os.environ, "HOME": str(self.dir)},
        )

    def cmd(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def codecs(self) -> dict[str, int]:
        """``"speex/16000"`` -> index in linphonec's ``codec list``."""
        return {f"{m[1]}/{m[2]}": int(m[0]) for m in re.findall(r"^\s*(\d+): (\S+) \((\d+)\)", self.output(), re.MULTILINE)}

    def only(self, codec: str, timeout: float = 10.0) -> None:
        """Enable only ``codec`` ("speex/16000"), after linphonec listed its codecs."""
        self.cmd("codec list")
        end = time.monotonic() + timeout
        while codec not in self.codecs():
            if time.monotonic() > end:
                raise TimeoutError(f"linphonec did not list its codecs:\n{self.output()[-2000:]}")
            time.sleep(0.1)
        for name, index in self.codecs().items():
            self.cmd(f"codec {'enable' if name == codec else 'disable'} {index}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.cmd("quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()


@pytest.fixture
def linphone(tmp_path: Path) -> Iterator[Linphonec]:
    require_program("linphonec", "linphone-cli")
    lin = Linphonec(tmp_path)
    yield lin
    lin.stop()


def trunk_config(lin: Linphonec, codec: str) -> Any:
    return make_config(
        {
            "trunk": [{"name": "phone", "target": f"sip:lin@127.0.0.1:{lin.sip_port}", "codecs": [codec]}],
            "route": [{"pattern": "lin", "trunk": "phone", "public": True}],
        }
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("codec, rate", [("speex/16000", 16000), ("speex", 8000)])
@pytest_twisted.ensureDeferred
async def test_speex_audio_both_ways_with_linphone(linphone: Linphonec, codec: str, rate: int) -> None:
    lin = linphone
    lin.cmd("soundcard use files")
    lin.only(f"speex/{rate}")
    lin.cmd(f"play {lin.wav}")
    lin.cmd(f"record {lin.rec}")
    svc = start_telephony(trunk_config(lin, codec))
    try:
        leg = LocalLeg(tone_hz=1000.0, rate=rate)
        call = svc.manager.place_call(leg, "lin")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 10), lin.output()[-3000:]
        assert call.codec == "speex" and call.stream is not None and call.stream.media is not None
        assert call.stream.media.codec.clock_rate == rate
        await sleep(4.0)
        stats = call.stream.stats
        # (linphone also sends a few STUN binding requests to our RTP port: counted as bad packets)
        assert stats.packets_received > 100 and stats.bad_packets <= 10, (stats, lin.output()[-2000:])
        assert leg.received_rate == rate
        assert_tone(leg.recording(), rate, PHONE_HZ, f"gateway heard linphone ({codec})", seconds=1.0)
        call.hangup()
        assert await wait_for(lambda: lin.rec.exists() and lin.rec.stat().st_size > 44 + rate, 5), lin.output()[-2000:]
        await sleep(0.5)
        x, wav_rate = peers.read_wav(lin.rec)
        tail = x[len(x) // 4 :]
        heard = peers.dominant_frequency(tail, wav_rate)
        print(f"\n[{codec} with linphone] gateway heard {peers.dominant_frequency(leg.recording()[-rate:], rate):.1f} Hz; "
              f"linphone heard {heard:.1f} Hz {peers.rms_dbfs(tail):.1f} dBFS ({len(x) / wav_rate:.1f} s at {wav_rate} Hz); "
              f"{stats.packets_sent} sent, {stats.packets_received} received")
        assert abs(heard - 1000.0) < 20 and peers.rms_dbfs(tail) > -30
    finally:
        await svc.stopService()
