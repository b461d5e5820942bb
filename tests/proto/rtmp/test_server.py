from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webgate.proto.errors import LocalProtocolError
from webgate.proto.rtmp.amf import encode_amf0, encode_data
from webgate.proto.rtmp.chunk import ChunkWriter, user_control_payload
from webgate.proto.rtmp.handshake import HandshakeKind
from webgate.proto.rtmp.server import (
    AudioReceived,
    CommandReceived,
    ConnectRequested,
    ControlReceived,
    DataReceived,
    HandshakeCompleted,
    PlayRequested,
    ProtocolViolation,
    PublishRequested,
    RtmpLimits,
    RtmpServerConfig,
    RtmpServerConnection,
    StreamClosed,
    StreamCreated,
    VideoReceived,
)

from .client import ScriptedClient

CONNECT_OBJ = {
    "app": "call",
    "flashVer": "WIN 11,1,102,55",
    "tcUrl": "rtmp://127.0.0.1/call",
    "fpad": False,
    "capabilities": 239,
    "audioCodecs": 3575,
    "videoCodecs": 252,
    "videoFunction": 1,
    "objectEncoding": 0,
}


def _connected(config: RtmpServerConfig | None = None, **kw: Any) -> ScriptedClient:
    c = ScriptedClient(RtmpServerConnection(config), **kw)
    c.handshake()
    ev = c.command("connect", "alice", "secret", obj=dict(CONNECT_OBJ), tid=1)
    assert isinstance(ev[-1], ConnectRequested)
    c.server.accept_connect()
    c.pump()
    return c


def _by_type(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def test_full_scripted_session() -> None:
    server = RtmpServerConnection()
    c = ScriptedClient(server, digest=True, schema=0)
    ev = c.handshake()
    assert ev == [HandshakeCompleted(HandshakeKind.DIGEST_SCHEMA0)]
    c.set_chunk_size(4096)
    ev = c.command(
        "connect",
        "alice",
        {"token": "t"},
        obj=dict(CONNECT_OBJ, objectEncoding=3),
        tid=1,
    )
    (req,) = _by_type(ev, ConnectRequested)
    assert req.app == "call" and req.tc_url == "rtmp://127.0.0.1/call"
    assert req.args == ["alice", {"token": "t"}] and req.object_encoding == 3
    assert server.data_to_send() == b""  # nothing until the adapter decides
    server.accept_connect(extra={"data": {"version": "1"}})
    msgs = c.pump()
    assert [m.type_id for m in msgs] == [5, 6, 1, 20]
    assert c.parser.chunk_size == 4096
    res = c.commands_received()[-1]
    assert res.name == "_result" and res.transaction_id == 1
    assert (
        res.command_object["fmsVer"].startswith("FMS/")
        and res.command_object["capabilities"] == 31
    )
    assert res.args[0]["code"] == "NetConnection.Connect.Success"
    assert res.args[0]["objectEncoding"] == 3 and res.args[0]["data"] == {
        "version": "1"
    }

    c.command("releaseStream", "echo")
    c.command("FCPublish", "echo")
    ev = c.command("createStream", None)
    assert _by_type(ev, StreamCreated) == [StreamCreated(1)]
    cmds = c.commands_received()
    assert [x.name for x in cmds[-4:]] == [
        "_result",
        "onFCPublish",
        "_result",
        "_result",
    ]
    assert cmds[-1].transaction_id == c.tid and cmds[-1].args == [1]

    ev = c.command("publish", "echo", "live", stream_id=1)
    assert ev == [PublishRequested(1, "echo", "live", [])]
    # media before acceptance is delivered (publish pending), on unknown streams it is dropped
    server.accept_publish(1, {"sessionId": "S1"})
    msgs = c.pump()
    assert msgs[0].type_id == 4 and msgs[0].payload == user_control_payload(0, 1)
    status = c.commands_received()[-1]
    assert status.name == "onStatus" and msgs[-1].stream_id == 1
    assert (
        status.args[0]["code"] == "NetStream.Publish.Start"
        and status.args[0]["sessionId"] == "S1"
    )

    t, body = encode_data("@setDataFrame", "onMetaData", {"audiocodecid": 6.0})
    ev = c.message(4, t, 1, 0, body)
    assert ev == [DataReceived(1, "onMetaData", [{"audiocodecid": 6}], 0, True)]
    audio = bytes([0x62]) + b"\x11" * 64
    events = []
    for i in range(10):
        events += c.message(4, 8, 1, i * 23, audio)
    events += c.message(6, 9, 1, 0, b"\x17\x00\x00\x00\x00")
    events += c.message(4, 8, 7, 0, audio)  # stream 7 does not exist: dropped
    assert [e.timestamp_ms for e in _by_type(events, AudioReceived)] == [
        i * 23 for i in range(10)
    ]
    assert all(
        e.data == audio and e.stream_id == 1 for e in _by_type(events, AudioReceived)
    )
    assert _by_type(events, VideoReceived) == [
        VideoReceived(1, 0, b"\x17\x00\x00\x00\x00")
    ]

    ev = c.command("FCUnpublish", "echo")
    assert ev == [StreamClosed(1, "FCUnpublish")]
    ev = c.command("deleteStream", 1, tid=0)
    assert ev == [StreamClosed(1, "deleteStream")]
    assert server.stream_ids() == []
    assert not server.closed
    assert not any(isinstance(e, ProtocolViolation) for e in c.events)


def test_connect_bytes_together_with_c2_and_trailing_args() -> None:
    server = RtmpServerConnection()
    c = ScriptedClient(server, digest=False)
    t, body = (
        20,
        encode_amf0(
            "connect", 1, CONNECT_OBJ, "user@example.org", 42, None, {"x": [1, 2]}
        ),
    )
    ev = c.handshake(trailing=c.writer.write(3, t, 0, 0, body))
    assert isinstance(ev[0], HandshakeCompleted) and ev[0].kind is HandshakeKind.PLAIN
    (req,) = _by_type(ev, ConnectRequested)
    assert req.args == ["user@example.org", 42, None, {"x": [1, 2]}]


def test_reject_connect_closes() -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    c.command("connect", obj=dict(CONNECT_OBJ), tid=1)
    c.server.reject_connect(description="bad password")
    c.pump()
    err = c.commands_received()[-1]
    assert (
        err.name == "_error" and err.args[0]["code"] == "NetConnection.Connect.Rejected"
    )
    assert err.args[0]["description"] == "bad password"
    assert c.server.closed
    assert c.server.receive_data(b"more", 1.0) == []


def test_amf3_connect_gets_type17_replies() -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    ev = c.command("connect", obj=dict(CONNECT_OBJ, objectEncoding=3), tid=1, amf3=True)
    assert _by_type(ev, ConnectRequested)[0].object_encoding == 3
    c.server.accept_connect()
    msgs = c.pump()
    assert msgs[-1].type_id == 17 and msgs[-1].payload[0] == 0
    assert c.commands_received()[-1].args[0]["objectEncoding"] == 3


def test_reject_publish_and_play_flow() -> None:
    c = _connected()
    c.command("createStream", None)
    c.command("publish", "bad name", "live", stream_id=1)
    c.server.reject_publish(1, "NetStream.Publish.BadName", "nope")
    c.pump()
    assert c.commands_received()[-1].args[0]["code"] == "NetStream.Publish.BadName"
    assert c.commands_received()[-1].args[0]["level"] == "error"
    ev = c.command("play", "echo", -1000, -1, True, stream_id=1)
    assert ev == [PlayRequested(1, "echo", -1000, -1, True)]
    c.server.accept_play(1, metadata={"audiocodecid": 8})
    c.server.send_audio(1, 0, b"\x82" + b"\xff" * 160)
    c.server.send_audio(1, 20, b"\x82" + b"\xff" * 160)
    msgs = c.pump()
    codes = [x.args[0]["code"] for x in c.commands_received() if x.name == "onStatus"]
    assert codes[-2:] == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    data = [m for m in msgs if m.type_id == 18]
    assert [
        encode_data("|RtmpSampleAccess", True, True)[1],
        encode_data("onMetaData", {"audiocodecid": 8})[1],
    ] == [d.payload for d in data]
    audio = [m for m in msgs if m.type_id == 8]
    assert [(a.stream_id, a.timestamp, len(a.payload)) for a in audio] == [
        (1, 0, 161),
        (1, 20, 161),
    ]
    with pytest.raises(LocalProtocolError):
        c.server.accept_play(1)  # already playing
    ev = c.command("closeStream", stream_id=1, tid=0)
    assert ev == [StreamClosed(1, "closeStream")]
    c.command("play", "missing", stream_id=1)
    c.server.reject_play(1)
    c.pump()
    assert c.commands_received()[-1].args[0]["code"] == "NetStream.Play.StreamNotFound"


def test_rpc_commands_results_and_client_calls() -> None:
    c = _connected()
    ev = c.command("invite", "sip:bob@example.org", {"audio": True}, tid=5)
    assert ev == [
        CommandReceived("invite", 5, ["sip:bob@example.org", {"audio": True}], None, 0)
    ]
    c.server.send_result(5, "ok")
    c.server.send_error(6, {"code": "x"})
    c.server.call_client("ringing", "180 Ringing")
    c.pump()
    r, e, call = c.commands_received()[-3:]
    assert (r.name, r.transaction_id, r.args) == ("_result", 5, ["ok"])
    assert (e.name, e.transaction_id, e.args) == ("_error", 6, [{"code": "x"}])
    assert (call.name, call.transaction_id, call.command_object, call.args) == (
        "ringing",
        0,
        None,
        ["180 Ringing"],
    )
    ev = c.command("sendDTMF", "5", tid=0)
    assert ev == [CommandReceived("sendDTMF", 0, ["5"], None, 0)]


def test_ping_answered_and_control_events() -> None:
    c = _connected()
    ev = c.message(2, 4, 0, 0, user_control_payload(6, 4242))
    assert ev == []
    assert c.received[-1].type_id == 4 and c.received[
        -1
    ].payload == user_control_payload(7, 4242)
    ev = c.message(2, 4, 0, 0, user_control_payload(3, 1, 500))
    assert isinstance(ev[0], ControlReceived)
    c.server.send_ping(99)
    assert c.pump()[-1].payload == user_control_payload(6, 99)


def test_ack_window_from_client() -> None:
    c = _connected()
    c.message(2, 5, 0, 0, struct.pack(">I", 5000))
    c.command("createStream", None)
    c.command("publish", "x", stream_id=1)
    c.server.accept_publish(1)
    c.pump()
    before = len([m for m in c.received if m.type_id == 3])
    for i in range(20):
        c.message(4, 8, 1, i * 20, b"\x62" + bytes(400))
    acks = [m for m in c.received if m.type_id == 3]
    assert len(acks) - before >= 1
    assert struct.unpack(">I", acks[-1].payload)[0] <= c.server.bytes_received


def test_stream_limit() -> None:
    c = _connected(RtmpServerConfig(limits=RtmpLimits(max_streams=2)))
    for _ in range(3):
        c.command("createStream", None)
    names = [x.name for x in c.commands_received()[-3:]]
    assert names == ["_result", "_result", "_error"]
    assert c.server.stream_ids() == [1, 2]


def _violation(c: ScriptedClient, ev: list[Any]) -> ProtocolViolation:
    assert isinstance(ev[-1], ProtocolViolation), ev
    assert c.server.closed and c.server.error is not None
    return ev[-1]


def test_garbage_after_handshake() -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    v = _violation(c, c.send_raw(b"\x43GET / HTTP/1.1\r\n\r\n"))
    assert "without a previous header" in v.message


@pytest.mark.parametrize("size", [0, 2**31, 2**31 - 1])
def test_absurd_chunk_size(size: int) -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    _violation(c, c.message(2, 1, 0, 0, struct.pack(">I", size)))


def test_message_over_limit() -> None:
    c = ScriptedClient(
        RtmpServerConnection(
            RtmpServerConfig(limits=RtmpLimits(max_message_length=10000))
        )
    )
    c.handshake()
    v = _violation(c, c.message(3, 20, 0, 0, bytes(10001)))
    assert "exceeds" in v.message


def test_invalid_amf_command() -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    _violation(c, c.message(3, 20, 0, 0, b"\x02\x00\x07conn"))


@pytest.mark.parametrize("name", ["createStream", "publish", "invite"])
def test_command_before_connect(name: str) -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    _violation(c, c.command(name))


def test_media_before_connect_and_double_connect() -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    _violation(c, c.message(4, 8, 1, 0, b"\x62"))
    c2 = _connected()
    _violation(c2, c2.command("connect", obj=dict(CONNECT_OBJ), tid=1))


def test_connect_without_object() -> None:
    c = ScriptedClient(RtmpServerConnection())
    c.handshake()
    _violation(c, c.command("connect", obj="notanobject", tid=1))


def test_adapter_misuse_is_local_error() -> None:
    c = _connected()
    with pytest.raises(LocalProtocolError):
        c.server.accept_publish(1)
    with pytest.raises(LocalProtocolError):
        c.server.accept_connect()
    with pytest.raises(LocalProtocolError):
        c.server.send_audio(9, 0, b"x")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=5))
def test_fuzz_after_connect(blobs: list[bytes]) -> None:
    c = _connected()
    for b in blobs:
        ev = c.server.receive_data(b, 0.0)
        c.server.data_to_send()
        if c.server.closed:
            assert isinstance(ev[-1], ProtocolViolation)
            break


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22]),
            st.binary(max_size=60),
        ),
        max_size=8,
    )
)
def test_fuzz_well_framed_messages(msgs: list[tuple[int, bytes]]) -> None:
    c = _connected()
    w = ChunkWriter()
    for type_id, payload in msgs:
        ev = c.server.receive_data(w.write(3, type_id, 1, 0, payload), 0.0)
        c.server.data_to_send()
        if c.server.closed:
            assert isinstance(ev[-1], ProtocolViolation)
            break
