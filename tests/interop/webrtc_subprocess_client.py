"""An aiortc "browser" in its own process, for tests that must freeze or kill the browser
(SIGSTOP: its network simply disappears, no WebSocket close, no DTLS close).

    python -m tests.interop.webrtc_subprocess_client WS_URL DESTINATION [TONE_HZ]

Connects to the gateway's /ws, calls DESTINATION with an aiortc offer (a tone as its
microphone), applies the answer, then keeps the call up until killed. Progress lines
(``welcome``, ``accepted SID``, ``answered``, ``ended CAUSE``) go to stdout, flushed.
"""

from __future__ import annotations

import sys


def main() -> None:
    from webgate.tap import install_asyncio_reactor

    install_asyncio_reactor()
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    from tests.adapters.webrtc_client import Browser, connect

    url, destination = sys.argv[1], sys.argv[2]
    tone = float(sys.argv[3]) if len(sys.argv) > 3 else 700.0

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def run() -> None:
        browser = Browser(tone_hz=tone, codecs=["pcmu"])
        ws = await connect(url)
        await ws.next("welcome", 10)
        say("welcome")
        ws.send({"type": "call", "destination": destination, "sdp": await browser.offer()})
        say("accepted " + (await ws.next("accepted", 10))["session_id"])
        await browser.answer((await ws.next("answer", 10))["sdp"])
        await ws.next("progress", 20, state="answered")
        say("answered")
        ended = await ws.next("ended", 3600)
        say("ended " + str(ended.get("cause")))

    def done(result: object) -> None:
        say(f"done {result!r}")
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(run()).addBoth(done))
    reactor.run()


if __name__ == "__main__":
    main()
