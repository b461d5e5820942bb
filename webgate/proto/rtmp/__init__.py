"""Sans-IO RTMP server core: handshake (plain + digest), chunk stream, AMF, NetConnection/NetStream."""

from webgate.proto.rtmp.server import (
    AudioReceived,
    CommandReceived,
    ConnectRequested,
    ControlReceived,
    DataReceived,
    Event,
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

__all__ = [
    "AudioReceived",
    "CommandReceived",
    "ConnectRequested",
    "ControlReceived",
    "DataReceived",
    "Event",
    "HandshakeCompleted",
    "PlayRequested",
    "ProtocolViolation",
    "PublishRequested",
    "RtmpLimits",
    "RtmpServerConfig",
    "RtmpServerConnection",
    "StreamClosed",
    "StreamCreated",
    "VideoReceived",
]
