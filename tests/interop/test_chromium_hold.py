"""webgate.js ``call.hold(true|false)`` in headless Chromium against a SIPp UAS that checks the
gateway's re-INVITEs (a=sendonly, then a=sendrecv), and a refused hold (488) that keeps the call."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import pytest_twisted

from tests.calls.gw import process_exit
from tests.interop import peers
from tests.interop.test_chromium_calls import Page, chromium, released, sipp_gateway  # noqa: F401 - fixture

HOLD = r"""
const [on] = arguments;
const done = arguments[arguments.length - 1];
const seen = [];
for (const t of ['held', 'resumed']) H.call.addEventListener(t, (e) => seen.push(t));
H.call.hold(on).then(
  (held) => done({ held, prop: H.call.held, seen, state: H.call.state }),
  (e) => done({ code: e.code, message: e.message, prop: H.call.held, state: H.call.state,
                status: (H.errors[H.errors.length - 1] || {}).status }));
"""


async def hold(page: Page, on: bool) -> dict[str, Any]:
    return await page._run(HOLD, on)  # type: ignore[no-any-return]


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_page_holds_and_resumes_the_phone(chromium: Any, sipp_factory: Callable[..., peers.Sipp]) -> None:  # noqa: F811
    sipp = sipp_factory("uas_hold_by_uac")
    gw = sipp_gateway(sipp)
    page = Page(chromium, gw)
    try:
        await page.call_answered("1000", sipp)
        r = await hold(page, True)
        assert (r.get("held"), r.get("prop"), r.get("state")) == (True, True, "answered"), (r, page.console())
        assert r["seen"] == ["held"], r
        (call,) = list(gw.svc.registry)
        assert call.held
        r = await hold(page, False)
        assert (r.get("held"), r.get("prop"), r.get("seen")) == (False, False, ["resumed"]), (r, page.console())
        assert not call.held
        await page.hangup()
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
        assert await released(gw)
    finally:
        await gw.stop()


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_page_hold_refused_keeps_the_call(chromium: Any, sipp_factory: Callable[..., peers.Sipp]) -> None:  # noqa: F811
    sipp = sipp_factory("uas_hold_refused")
    gw = sipp_gateway(sipp)
    page = Page(chromium, gw)
    try:
        await page.call_answered("1000", sipp)
        r = await hold(page, True)
        assert (r.get("code"), r.get("status"), r.get("prop"), r.get("state")) == ("hold_failed", 488, False, "answered"), r
        await page.hangup()
        assert await process_exit(sipp.proc, 10) == 0, sipp.describe()
        assert await released(gw)
    finally:
        await gw.stop()
