"""twistd plugin for webgate: ``twistd -n webgate [--config FILE.toml] ...``.

This file holds one ServiceMaker and nothing else; the code is in webgate/tap.py.
"""

from twisted.application.service import ServiceMaker

webgate = ServiceMaker(
    "webgate",
    "webgate.tap",
    "WebRTC and RTMP (Flash) to SIP gateway.",
    "webgate",
)
