"""librtmp (rtmpdump's C library, Debian's librtmp1, through python-librtmp) as a third-party Flash-style
RTMP client in the Flash RPC mode, and as the checker of webgate's digest handshake.

The client runs as a subprocess (``tests/interop/librtmp_client.py``: librtmp is blocking) and prints one
JSON event per line; the test reads them while the gateway keeps running on the reactor.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from tests.adapters.rtmp_helpers import Gateway, Process
from tests.calls.gw import sleep, wait_for
from tests.interop import peers
from tests.interop.conftest import require_program, tone_baresip
from tests.require import require_module
from webgate.calls.call import CallState
from webgate.media.analysis import dominant_frequency, read_wav, rms_dbfs
from webgate.proto.flv import TAG_AUDIO, read_flv

require_module("librtmp", "python-librtmp")  # skip, or fail under WEBGATE_REQUIRE_PEERS=1

CLIENT = Path(__file__).with_name("librtmp_client.py")
SWF = {"swfhash": "00" * 32, "swfsize": 12345}  # makes librtmp do (and check) the digest handshake
TONE_HZ = 800.0
BARESIP_HZ = 440.0


class LibrtmpClient:
    """The subprocess; ``events()`` parses what it printed so far."""

    def __init__(self, spec: dict[str, Any], timeout: float = 60.0) -> None:
        self.proc = Process([sys.executable, str(CLIENT), json.dumps(spec)], timeout)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in bytes(self.proc.proto.out).decode(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def find(self, **match: Any) -> dict[str, Any] | None:
        for e in self.events():
            if all(e.get(k) == v for k, v in match.items()):
                return e
        return None

    def count(self, **match: Any) -> int:
        return sum(1 for e in self.events() if all(e.get(k) == v for k, v in match.items()))

    async def wait(self, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        assert await wait_for(lambda: self.find(**match) is not None or self.proc.done.called, timeout, 0.05), \
            f"no {match}: {self.events()}"
        e = self.find(**match)
        assert e is not None, f"client exited without {match}: {self.describe()}"
        return e

    async def finish(self, timeout: float = 30.0) -> int | None:
        code, _out, _err = await self.proc.wait()
        return code

    def describe(self) -> str:
        return (f"events: {self.events()}\nstderr: {bytes(self.proc.proto.err).decode(errors='replace')[-3000:]}")


def rpc_url(port: int, user: str = "alice", *conn: str) -> str:
    """librtmp URL for rtmp://127.0.0.1:PORT/sip/USER: ``app=`` keeps the user in the application name
    (librtmp would take it as the play path), ``conn=S:`` are the connect arguments."""
    args = " ".join("conn=S:" + a.replace("\\", "\\5c").replace(" ", "\\20") for a in conn)
    return f"rtmp://127.0.0.1:{port}/sip/{user} app=sip/{user} playpath=local live=1 timeout=1 {args}"


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[peers.Baresip]:
    with tone_baresip(tmp_path, BARESIP_HZ) as b:
        yield b


def _gateway(bob: peers.Baresip) -> Gateway:
    return Gateway(peers.phone_route(bob, codecs=["PCMU"], dtmf="rfc4733"))


@pytest_twisted.ensureDeferred
async def test_librtmp_flash_rpc_call_to_baresip(bob: peers.Baresip) -> None:
    """connect with arguments, invite, callbacks, published audio, sendDTMF, bye; a second call ended
    by the phone -> byed; a refused invite -> _error + rejected."""
    gw = _gateway(bob)
    spec = {
        "url": rpc_url(gw.rtmp_port, "alice", "alice", "secret-password", "Alice Smith"),
        "publish": True,
        **SWF,
        "steps": [
            {"do": "call", "method": "invite", "args": ["nosuch"]},
            {"do": "call", "method": "invite", "args": ["bob"]},
            {"do": "wait", "name": "sessionId"},
            {"do": "wait", "name": "accepted", "timeout": 10},
            {"do": "flv", "what": "metadata"},
            {"do": "flv", "what": "video"},
            {"do": "audio", "seconds": 3.0, "hz": TONE_HZ, "codec": "nellymoser"},
            {"do": "call", "method": "sendDTMF", "args": ["123"]},
            {"do": "audio", "seconds": 1.5, "hz": TONE_HZ, "codec": "nellymoser"},
            {"do": "call", "method": "hold", "args": [True]},
            {"do": "call", "method": "hold", "args": [False]},
            {"do": "call", "method": "accept"},
            {"do": "call", "method": "noSuchMethod"},
            {"do": "call", "method": "bye"},
            {"do": "sleep", "seconds": 0.5},
            # second call: the phone hangs up -> byed
            {"do": "call", "method": "invite", "args": ["bob"]},
            {"do": "wait", "name": "accepted", "timeout": 10},
            {"do": "wait", "name": "byed", "timeout": 20},
        ],
    }
    before = set(bob.rec_dir.glob("dump-*-dec.wav"))
    logged: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event) + repr(event))

    globalLogPublisher.addObserver(observe)
    client = LibrtmpClient(spec)
    try:
        hs = await client.wait(event="handshake")
        assert hs["genuine_server"], hs  # librtmp checked the S1 digest and the S2 signature
        await client.wait(event="publishing")

        refused = await client.wait(event="reply", method="invite")
        assert refused["name"] == "_error", refused
        assert refused["args"][0]["reason"] == "destination_not_allowed"
        assert refused["args"][0]["code"] == "NetConnection.Call.Failed"
        rej = await client.wait(event="invoke", name="rejected")
        assert rej["args"] == ["destination_not_allowed"]

        await client.wait(event="waited", name="sessionId")
        first = [e for e in client.events() if e.get("event") == "reply" and e.get("method") == "invite"][1]
        assert first["name"] == "_result"
        session_id = first["args"][0]
        assert isinstance(session_id, str) and session_id.isdigit() and 8 <= len(session_id) <= 10
        sid_cb = client.find(event="invoke", name="sessionId")
        assert sid_cb is not None and sid_cb["args"] == [session_id]
        await client.wait(event="waited", name="accepted")
        call = gw.manager.registry.by_session_id(session_id)
        assert call is not None and call.state is CallState.ANSWERED
        assert call.identity is None  # a password, no token: no identity (not the URL's user)
        assert call.ingress_kind == "rtmp"
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)

        dtmf = await client.wait(timeout=20, event="reply", method="sendDTMF")
        assert dtmf["name"] == "_result" and dtmf["args"] == [True], dtmf

        def dtmf_at_bob() -> bool:
            return bob.dtmf_received() == "123"

        assert await wait_for(dtmf_at_bob, 5, 0.1), (bob.dtmf_received(), bob.log_tail(1500))
        assert call.leg.audio_in.codec == "nellymoser"
        assert call.leg.audio_in.bad_tags == 0 and call.leg.audio_in.sent_frames > 100

        assert await wait_for(lambda: client.count(event="reply", method="hold") == 2, 10)
        held = [e for e in client.events() if e.get("event") == "reply" and e.get("method") == "hold"]
        assert [h["args"] for h in held] == [[True], [False]]
        acc = await client.wait(event="reply", method="accept")
        assert acc["name"] == "_error" and acc["args"][0]["reason"] == "no_call"
        unk = await client.wait(event="reply", method="noSuchMethod")
        assert unk["name"] == "_error" and "reason" not in unk["args"][0]
        # video and onMetaData were taken and dropped on the web side, the audio was all good
        conn = next(iter(gw.factory.connections))
        assert conn.media_dropped >= 2, conn.media_dropped
        bye = await client.wait(event="reply", method="bye")
        assert bye["name"] == "_result" and bye["args"] == [True]
        await deferToThread(bob.wait_event, "CALL_CLOSED", 8)
        assert call.end_cause == "client_hangup"
        assert client.find(event="invoke", name="byed") is None  # no byed for one's own bye

        # what baresip heard during the first call: librtmp's Nellymoser 800 Hz
        heard = bob.recorded_wav("dec")
        assert heard is not None and heard not in before
        x, rate = read_wav(heard)
        seg = x[int(rate * 1.0): int(rate * 4.0)]
        f, level = dominant_frequency(seg, rate), rms_dbfs(seg)
        print(f"\nlibrtmp RPC (Nellymoser 8 kHz) -> baresip heard {f:.1f} Hz at {level:.1f} dBFS")
        assert abs(f - TONE_HZ) < 20, f
        assert level > -35, level

        # second call: the phone hangs up -> byed
        assert await wait_for(lambda: client.count(event="waited", name="accepted") == 2, 15), client.describe()
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)
        await deferToThread(bob.hangup)
        byed = await client.wait(timeout=10, event="waited", name="byed")
        assert byed["args"] == []
        done = await client.wait(event="done")
        assert not done["closed"]  # the connection outlives its calls
        assert await client.finish() == 0, client.describe()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
        # the connect's display name went into the INVITE's From (the password went nowhere)
        est = [e for e in (bob.ctrl.events if bob.ctrl else []) if e.get("type") == "CALL_ESTABLISHED"]
        assert [e.get("peerdisplayname") for e in est] == ["Alice Smith", "Alice Smith"], est
        assert "secret-password" not in bob.log_text()
        assert logged and not any("secret-password" in line for line in logged)
    finally:
        globalLogPublisher.removeObserver(observe)
        client.proc.kill()
        await client.proc.wait()
        await gw.stop()


# ---- the digest handshake, checked by librtmp ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_librtmp_plain_and_digest_handshakes_against_gateway() -> None:
    """librtmp without SWF data uses the plain handshake, with it the digest one (and verifies it):
    both reach a working call (built-in echo)."""
    gw = Gateway()
    try:
        for swf, genuine in (({}, False), (SWF, True)):
            client = LibrtmpClient({
                "url": rpc_url(gw.rtmp_port, "carol@example.org", "carol", "tok"), "publish": True, **swf,
                "steps": [{"do": "call", "method": "invite", "args": ["echo"]},
                          {"do": "wait", "name": "accepted"},
                          {"do": "audio", "seconds": 0.5, "codec": "pcmu"},
                          {"do": "call", "method": "bye"}],
            })
            hs = await client.wait(event="handshake")
            assert hs["genuine_server"] is genuine, hs
            assert any("FMS Version" in line for line in hs["lines"]), hs
            await client.wait(event="waited", name="accepted")
            bye = await client.wait(event="reply", method="bye")
            assert bye["name"] == "_result"
            assert await client.finish() == 0, client.describe()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)
    finally:
        await gw.stop()


class _FakeHandshakeServer:
    """A one-shot TCP server answering the handshake with S0+S1+S2 from ``make(c0c1)``, then closing.
    Only the negative control for the test above: it proves librtmp really rejects a bad digest."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(20)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            data = b""
            while len(data) < 1537:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(self.make(data[:1537]))
            try:
                conn.recv(4096)  # C2 (or nothing)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def _genuine_reply(c0c1: bytes) -> bytes:
    from webgate.proto.rtmp.handshake import ServerHandshake

    hs = ServerHandshake()
    hs.receive_data(c0c1)
    return hs.data_to_send()


def _bad_s2(c0c1: bytes) -> bytes:
    out = bytearray(_genuine_reply(c0c1))
    out[-1] ^= 0x01  # the last byte of S2's HMAC signature
    return bytes(out)


def _no_s1_digest(c0c1: bytes) -> bytes:
    out = bytearray(_genuine_reply(c0c1))
    for i in range(9, 1537):  # S1 after time + version: keep the FMS version, destroy the digest
        out[i] = (i * 7) & 0xFF
    return bytes(out)


@pytest.mark.parametrize(("make", "expected"), [
    (_bad_s2, "Server not genuine Adobe!"),
    (_no_s1_digest, "Couldn't verify the server digest"),
])
@pytest_twisted.ensureDeferred
async def test_librtmp_rejects_a_bad_server_digest(make: Any, expected: str) -> None:
    srv = _FakeHandshakeServer(make)
    try:
        client = LibrtmpClient({"url": rpc_url(srv.port), **SWF, "steps": []}, timeout=30)
        code = await client.finish()
        hs = client.find(event="handshake")
        assert client.find(event="connect_failed") is not None, client.describe()
        assert code == 2
        assert hs is not None and not hs["genuine_server"]
        assert any(expected in line for line in hs["lines"]), hs
    finally:
        srv.close()


# ---- encoder style with librtmp on both ends ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_librtmp_publishes_encoder_style_and_librtmp_plays_session(tmp_path: Path) -> None:
    """librtmp publishes µ-law to call/echo (releaseStream, FCPublish, createStream, publish); a second
    librtmp plays session/ID (codec=pcmu); ffmpeg decodes the FLV librtmp wrote: the tone came back."""
    require_program("ffmpeg", "ffmpeg")
    gw = Gateway()
    try:
        url = f"rtmp://127.0.0.1:{gw.rtmp_port}/call/echo live=1 timeout=2"
        pub = LibrtmpClient({"url": url, "publish": True, "steps": [
            {"do": "flv", "what": "metadata"},
            {"do": "audio", "seconds": 6.0, "hz": TONE_HZ, "codec": "pcmu"},
        ]})
        await pub.wait(event="publishing")
        assert await wait_for(lambda: any(c.state is CallState.ANSWERED for c in gw.svc.registry), 8)
        call = next(iter(gw.svc.registry))
        flv_path = tmp_path / "played.flv"
        player = LibrtmpClient({
            "url": f"rtmp://127.0.0.1:{gw.rtmp_port}/session/{call.session_id}?codec=pcmu live=1 timeout=2",
            "play_seconds": 3.0, "flv_out": str(flv_path), "steps": [],
        })
        played = await player.wait(timeout=15, event="played")
        assert played["bytes"] > 10000, player.describe()
        assert await player.finish() == 0, player.describe()
        assert await pub.finish() == 0, pub.describe()
        assert await wait_for(lambda: len(gw.svc.registry) == 0, 5)  # the publisher's close hung up
        assert call.end_cause == "client_hangup"
        assert call.leg.audio_in.codec == "pcm_mulaw" and call.leg.audio_in.passthrough_frames > 100

        _, tags = read_flv(flv_path.read_bytes())
        formats = {t.data[0] >> 4 for t in tags if t.tag_type == TAG_AUDIO}
        assert formats == {8}, formats  # ?codec=pcmu in librtmp's play path reached the gateway
        wav = tmp_path / "played.wav"
        dec = ffmpeg_decode(flv_path, wav)
        code, _o, err = await dec.wait()
        assert code == 0, err.decode(errors="replace")
        x, rate = read_wav(wav)
        tail = x[len(x) // 3:]
        f = dominant_frequency(tail, rate)
        print(f"\nlibrtmp publish (PCMU) -> echo -> librtmp play session (PCMU): {f:.1f} Hz, {len(x) / rate:.2f} s")
        assert len(x) > rate * 2
        assert abs(f - TONE_HZ) < 20, f
        assert rms_dbfs(tail) > -35
    finally:
        await gw.stop()


def ffmpeg_decode(flv_path: Path, wav: Path) -> Process:
    from tests.adapters.rtmp_helpers import ffmpeg

    return ffmpeg("-i", str(flv_path), "-map", "0:a", "-ac", "1", "-y", str(wav), timeout=20)


@pytest_twisted.ensureDeferred
async def test_librtmp_client_killed_mid_call_hangs_up_at_baresip(bob: peers.Baresip) -> None:
    """The Flash client vanishes (SIGKILL, no bye, no FIN from librtmp): the phone gets a BYE."""
    gw = _gateway(bob)
    client = LibrtmpClient({
        "url": rpc_url(gw.rtmp_port, "dave", "dave", "pw", "Dave"), "publish": True,
        "steps": [{"do": "call", "method": "invite", "args": ["bob"]},
                  {"do": "wait", "name": "accepted"},
                  {"do": "audio", "seconds": 30.0, "codec": "pcmu"}],
    })
    try:
        await client.wait(event="waited", name="accepted")
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)
        await sleep(1.0)
        call = next(iter(gw.svc.registry))
        assert call.state is CallState.ANSWERED and call.leg.audio_in.sent_frames > 20
        client.proc.kill()
        await client.proc.wait()
        await deferToThread(bob.wait_event, "CALL_CLOSED", 8)
        assert await wait_for(lambda: len(gw.svc.registry) == 0 and len(gw.factory.connections) == 0, 5)
        assert call.end_cause == "client_hangup"
        assert not gw.svc.rtp_pool.in_use
    finally:
        client.proc.kill()
        await gw.stop()
