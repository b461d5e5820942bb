"""webgate.js follows a cluster's redirect (issue 15): a headless Chromium on a page of node B
watches (``gw.watch``) a call that lives on node A; B answers ``redirect`` and webgate.js, without
the page doing anything, reconnects to A's ``ws_url``, re-sends the watch once and resolves there;
the watcher's canvas shows the caller's colour. Node A lists B's page origin in
``[http] allowed_origins`` (a page of one node talks to another after a redirect)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted

from tests.adapters.test_webrtc_watch import COLOURS, Caller, agent_token
from tests.adapters.webrtc_client import complete_call, connect
from tests.calls.gw import rtp_range, sleep, wait_for
from tests.cluster.conftest import RedisServer
from tests.interop.chromium_video import WatcherPage, launch_chromium, quit_chromium
from tests.ops.helpers import RunningGateway, gateway_config
from tests.require import require_program
from webgate.media.analysis import write_wav

KEY = "webgate-test-token-key-0123456789abcdef"
RGB_TOLERANCE = 40


def node_config(server: RedisServer, node_id: str, **http: Any) -> Any:
    lo, hi = rtp_range(200)
    return gateway_config({
        "cluster": {"enabled": True, "redis_url": server.url, "node_id": node_id, "heartbeat_s": 0.25,
                    "node_ttl_s": 1.5},
        "http": http,
        "rtp": {"port_min": lo, "port_max": hi},
        "tokens": {"key": KEY},
    })


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require_program("chromium", "chromium")
    require_program("chromedriver", "chromium-driver")
    wav = tmp_path / "silence.wav"
    write_wav(wav, np.zeros(48000, dtype=np.int16), 48000)
    drv, profile = launch_chromium(str(wav))
    try:
        yield drv
    finally:
        quit_chromium(drv, profile)


def ws_url(gw: RunningGateway) -> str:
    return gw.url("/ws").replace("http://", "ws://")


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_webgate_js_follows_the_redirect_to_the_calls_node(redis_server: RedisServer, browser: Any) -> None:
    b = RunningGateway(node_config(redis_server, "b"))
    a = RunningGateway(node_config(redis_server, "a", listen="127.0.0.1:0", allowed_origins=[b.base()]))
    caller, ws = Caller(COLOURS["red"]), None
    try:
        assert await wait_for(lambda: a.gw.cluster.node.available and b.gw.cluster.node.available, 5)
        assert await wait_for(lambda: a.gw.cluster.node.pooled > 0 and b.gw.cluster.node.pooled > 0, 5)
        ws = await connect(ws_url(a))
        await complete_call(ws, caller, {"type": "call", "destination": "echo"})
        (call,) = list(a.gw.registry)
        assert await wait_for(lambda: call.hub is not None and (call.hub.stats.width or 0) > 0, 10), "no caller video"
        await sleep(0.3)  # the index write

        watcher = WatcherPage(browser, b.base(), ws_url(b))
        await watcher.open("/")
        result = await watcher.watch(call.session_id, agent_token())
        assert "exception" not in result, (result, watcher.console())
        assert result["sessionId"] == call.session_id
        # the watch lives on A (the call's node), none on B
        assert len(call.hub.watchers) == 1
        followed = await watcher.wait(f"X.view.ws.url === {ws_url(a)!r} && X.view.state === 'watching'", 5)
        assert followed["ok"], (followed, watcher.console())
        shown = await watcher.wait("X.video && X.video.width > 0", 15)
        assert shown["ok"], (shown, watcher.console())
        colour = await watcher.colour()
        rgb = colour["samples"][-1]
        assert all(abs(x - y) <= RGB_TOLERANCE for x, y in zip(rgb, COLOURS["red"], strict=True)), colour
    finally:
        if ws is not None:
            ws.close()
        await caller.close()
        await a.stop()
        await b.stop()
