"""Back-pressure toward RTMP players (issue 12, item 5), over real sockets.

ffmpeg publishes a 1 kHz tone to ``call/echo``; a *slow player* -- a raw socket with a small
SO_RCVBUF that completes the handshake, connect and play and then reads nothing -- and a second,
healthy ffmpeg player listen to the same call. The gateway must keep what it queues for the slow
player bounded (its audio is dropped past ``[rtmp] player_max_queue_ms``), drop the player within
``player_max_behind_s`` of its data starting to wait, and the healthy player must hear 1 kHz
without a gap all along."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import protocol

from tests.adapters.rtmp_helpers import Gateway, RtmpClient, ffmpeg, reactor
from tests.calls.gw import sleep, wait_for
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs

TONE_HZ = 1000.0
MAX_QUEUE_MS = 300
MAX_BEHIND_S = 2
#: what the gateway may hold for the slow player: MAX_QUEUE_MS of G.711 (8 kB/s, plus FLV and chunk
#: headers, about 8.8 kB/s) and a few small control messages; without back-pressure it grows by that
#: rate for as long as the call lasts
QUEUE_BOUND = 8192


def twisted_buffered(transport: Any) -> int:
    """Bytes Twisted holds for ``transport`` and has not handed to the kernel yet.

    Read from Twisted's own buffer (its private attributes: a test's measurement, independent of
    the gateway's accounting, which uses public API only)."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


async def slow_player(port: int, path: str, stream: str) -> tuple[RtmpClient, int]:
    """A raw socket with a 4 kB receive buffer, adopted by the reactor for the handshake, connect
    and play, then never read again. Returns the client and its local port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window it offers
    s.connect(("127.0.0.1", port))  # loopback: the listener's backlog completes it at once
    s.setblocking(False)
    local_port = s.getsockname()[1]
    client = RtmpClient()
    reactor.adoptStreamConnection(s.fileno(), socket.AF_INET, protocol.Factory.forProtocol(lambda: client))
    s.close()  # the reactor holds its own descriptor of the socket
    res = await client.connect(path, port=port)
    assert res.name == "_result", res
    sid = await client.create_stream()
    client.command("play", stream, stream_id=sid)
    await client.status(sid, "NetStream.Play.Start")
    client.transport.pauseProducing()  # reads nothing from now on
    return client, local_port


def server_side(gw: Gateway, local_port: int) -> Any:
    return next(p for p in gw.factory.connections if p.transport.getPeer().port == local_port)


async def watch(until: Callable[[], bool], sample: Callable[[], None], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sample()
        if until():
            return True
        await sleep(0.02)
    return until()


@pytest_twisted.ensureDeferred
async def test_a_slow_player_is_bounded_and_dropped_while_another_keeps_its_tone(
    tmp_path: Path, require_program: Callable[[str], str]
) -> None:
    require_program("ffmpeg")
    gw = Gateway({"rtmp": {"player_max_queue_ms": MAX_QUEUE_MS, "player_max_behind_s": MAX_BEHIND_S}})
    publisher = None
    try:
        publisher = ffmpeg(
            "-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=8000:duration=40",
            "-c:a", "pcm_mulaw", "-f", "flv", gw.url("call/echo"), timeout=60,
        )
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), "no call"
        call = next(iter(gw.svc.registry))
        leg = call.leg

        # the healthy player records from before the slow one stalls until after it is gone
        wav = tmp_path / "healthy.wav"
        healthy = ffmpeg("-i", gw.url(f"session/{call.session_id}?codec=pcmu"), "-t", "10", "-ac", "1", "-y", str(wav), timeout=40)
        assert await wait_for(lambda: len(leg.players) == 1, 10), "the healthy player did not start"

        _slow, local_port = await slow_player(gw.rtmp_port, "call", "echo?codec=pcmu")
        conn = server_side(gw, local_port)
        assert len(leg.players) == 2
        stalled_at = time.monotonic()

        peak = [0]
        first_wait: list[float] = []

        def sample() -> None:
            if conn.lost:
                return
            queued = twisted_buffered(conn.transport)
            peak[0] = max(peak[0], queued)
            if queued and not first_wait:
                first_wait.append(time.monotonic())

        # the kernel's buffers fill first (seconds of G.711), then Twisted's; then the player is dropped
        assert await watch(lambda: conn.lost, sample, 40), (
            f"the slow player was never dropped: {twisted_buffered(conn.transport)} bytes queued for it"
        )
        lost_at = time.monotonic()
        assert first_wait, "the gateway never had to queue anything for the slow player"
        behind = lost_at - first_wait[0]
        print(f"\nslow player: the kernel's buffers full after {first_wait[0] - stalled_at:.2f} s; dropped {behind:.2f} s "
              f"after its data began to wait; peak {peak[0]} bytes queued; {conn.audio_dropped} audio messages dropped")
        assert behind <= MAX_BEHIND_S + 1.0, behind
        assert peak[0] <= QUEUE_BOUND, peak[0]
        assert conn.audio_dropped > 0  # past MAX_QUEUE_MS its audio was dropped, not queued
        assert gw.factory.slow_players_closed == 1
        assert len(leg.players) == 1 and call.state is CallState.ANSWERED  # the call and the other player go on

        code, _out, err = await healthy.wait()
        assert code == 0, err.decode(errors="replace")[-500:]
        pcm, rate = read_wav(wav)
        assert len(pcm) >= rate * 9, f"only {len(pcm) / rate:.1f} s recorded"
        # every second after the first (the echo's start) is the tone: no gap while the slow player stalled
        for i in range(2, int(len(pcm) / rate)):
            second = pcm[i * rate : (i + 1) * rate]
            f, level = dominant_frequency(second, rate), rms_dbfs(second)
            assert abs(f - TONE_HZ) < 15 and level > -30, f"healthy player, second {i}: {f:.1f} Hz at {level:.1f} dBFS"
    finally:
        if publisher is not None:
            publisher.kill()
            await publisher.wait()
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_closed_connection_whose_peer_reads_nothing_is_aborted(require_program: Callable[[str], str]) -> None:
    """Closing waits for the unsent bytes to go (``loseConnection``), but not forever: a peer that
    reads nothing is aborted ``player_max_behind_s`` later (the idle timeout or a shutdown closes
    connections this way)."""
    require_program("ffmpeg")
    gw = Gateway({"rtmp": {"player_max_queue_ms": MAX_QUEUE_MS, "player_max_behind_s": MAX_BEHIND_S}})
    publisher = None
    try:
        publisher = ffmpeg(
            "-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=8000:duration=30",
            "-c:a", "pcm_mulaw", "-f", "flv", gw.url("call/echo"), timeout=45,
        )
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 10), "no call"
        _slow, local_port = await slow_player(gw.rtmp_port, "call", "echo?codec=pcmu")
        conn = server_side(gw, local_port)
        assert await wait_for(lambda: twisted_buffered(conn.transport) > 0, 20), "nothing ever waited"
        conn.close()
        closed_at = time.monotonic()
        assert await wait_for(lambda: conn.lost, MAX_BEHIND_S + 2.0), "a closed connection lingers"
        assert MAX_BEHIND_S - 0.5 <= time.monotonic() - closed_at <= MAX_BEHIND_S + 1.0
    finally:
        if publisher is not None:
            publisher.kill()
            await publisher.wait()
        await gw.stop()
