"""Headless Chromium registered as a web user through ``/html5_client/webgate.js`` (``gw.register``,
the ``invited`` event, ``accept({stream})``), called by a real baresip: audio measured both ways,
and a refused registration (a token for another user) rejects with its code.

Shares the Chromium fixture and page scripts of tests/interop/test_chromium_calls.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.adapters.webrtc_client import Gateway
from tests.calls.gw import wait_for
from tests.interop import peers
from tests.interop.test_baresip import assert_wav_tone, closed
from tests.interop.test_chromium_calls import (  # noqa: F401 - chromium is a fixture
    BROWSER_HZ,
    PHONE_HZ,
    SNAPSHOT,
    Page,
    chromium,
    measured_hz,
    released,
)
from webgate.security.tokens import mint_token

KEY = "webgate-test-token-key-0123456789abcdef"

REGISTER = SNAPSHOT + r"""
const [wsUrl, user, token] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const H = window.H = { events: [], dtmf: [], ended: null, errors: [], invites: [], cancelled: [], t0: performance.now() };
  try {
    const { WebGate } = await import('/html5_client/webgate.js');
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const gw = H.gw = new WebGate({ url: wsUrl, token });
    gw.addEventListener('cancelled', (e) => H.cancelled.push(e.detail));
    gw.addEventListener('invited', async (e) => {
      H.invites.push({ from: e.detail.from, to: e.detail.to, sessionId: e.detail.sessionId });
      try {
        const call = H.call = await e.detail.accept({ stream });
        for (const t of ['answered', 'dtmf', 'ended', 'error'])
          call.addEventListener(t, (ev) => {
            H.events.push({ type: t, ms: performance.now() - H.t0 });
            if (t === 'dtmf') H.dtmf.push(ev.detail);
            if (t === 'ended') H.ended = ev.detail;
            if (t === 'error') H.errors.push(ev.detail);
          });
      } catch (err) { H.exception = (err.code ? err.code + ': ' : '') + err.message; }
    });
    done({ user: await gw.register(user) });
  } catch (e) {
    done({ exception: e.name + ': ' + e.message, code: e.code || null });
  }
})();
"""

HAS_CALL = SNAPSHOT + r"""
const [timeoutMs] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const t0 = performance.now();
  while (!H.call && !H.exception && performance.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 50));
  done({ ok: !!H.call, invites: H.invites, exception: H.exception || null,
         sessionId: H.call ? H.call.sessionId : null, direction: H.call ? H.call.direction : null });
})();
"""


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_baresip_calls_the_page_registered_with_webgate_js(
    chromium: Any,  # noqa: F811 - the imported fixture
    baresip_factory: Callable[..., peers.Baresip],
) -> None:
    bob = baresip_factory("bob", audio_codecs="pcmu")
    port = peers.free_port("udp")
    gw = Gateway({"sip": {"udp": f"127.0.0.1:{port}"}, "tokens": {"key": KEY}, "webrtc": {"ice_timeout_s": 5}})
    page = Page(chromium, gw)
    try:
        await page.open()
        refused = await page._run(REGISTER, gw.url, "alice", mint_token(KEY, sub="bob"))
        assert refused.get("code") == "user_not_allowed", refused
        reg = await page._run(REGISTER, gw.url, "alice", mint_token(KEY, sub="alice"))
        assert reg == {"user": "alice"}, (reg, page.console())
        assert await wait_for(lambda: gw.manager.web_users.lookup("alice") is not None, 5)

        await deferToThread(bob.dial, f"sip:alice@127.0.0.1:{port}")
        got = await page._run(HAS_CALL, 10000)
        assert got["ok"], (got, page.console())
        assert got["direction"] == "inbound" and got["invites"][0]["from"] == "bob"
        snap = await page.wait("answered", 10)
        assert snap["ok"], (snap, bob.log_tail(2000))
        await deferToThread(bob.wait_event, "CALL_ESTABLISHED", 5)
        call = gw.manager.registry.by_session_id(got["sessionId"])
        assert call is not None and call.direction == "inbound" and call.media_path == "packet"

        m = await page.measure()
        print(f"\ninbound: page measured {[round(f['hz'], 1) for f in m['freqs']]} Hz from baresip, "
              f"in {m.get('inboundCodec')} out {m.get('outboundCodec')}")
        assert abs(measured_hz(m) - PHONE_HZ) < 15, m
        assert m["packetsReceived"] > 50

        await page.hangup()
        await closed(bob, 8)
        assert_wav_tone(bob.recorded_wav("dec"), BROWSER_HZ, "baresip heard the page")
        assert await released(gw)
        # the registration's WebSocket outlives the call
        assert gw.manager.web_users.lookup("alice") is not None
    finally:
        await gw.stop()
