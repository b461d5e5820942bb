"""webgate: a WebRTC / RTMP to SIP gateway on Twisted."""

__version__ = "0.1.0"
