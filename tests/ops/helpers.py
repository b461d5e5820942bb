"""Helpers for the operations tests: a whole gateway (``build_gateway``) in-process on
127.0.0.1 with ephemeral ports, an HTTP client on the test reactor, a self-signed
certificate, and a way to run ``twistd -n webgate`` as a child process."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import ssl
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    readBody,
)
from twisted.web.http_headers import Headers

from tests.calls.gw import make_config, reactor, sleep, wait_for
from tests.tlsutil import self_signed
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg
from webgate.gateway import Gateway, build_gateway

ROOT = Path(__file__).resolve().parents[2]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
ADMIN_KEY = "test-admin-key-0123456789abcdef"


def gateway_config(extra: dict[str, Any] | None = None, **sip: Any) -> Any:
    """make_config() with HTTP on an ephemeral port, the API on (ADMIN_KEY) and metrics on."""
    base: dict[str, Any] = {"http": {"listen": "127.0.0.1:0"}, "api": {"admin_key": ADMIN_KEY, "metrics": True}}
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return make_config(base, **sip)


class RunningGateway:
    def __init__(self, config: Any) -> None:
        self.gw: Gateway = build_gateway(config, reactor)
        self.gw.startService()
        self.config = config

    @property
    def svc(self) -> Any:
        return self.gw.telephony

    @property
    def manager(self) -> Any:
        return self.gw.telephony.manager

    def base(self, name: str = "http", scheme: str = "http") -> str:
        hp = self.gw.listening_address(name)
        assert hp is not None, f"no {name} listener"
        return f"{scheme}://127.0.0.1:{hp.port}"

    def url(self, path: str) -> str:
        return self.base() + path

    async def stop(self) -> None:
        if self.gw.running:
            await self.gw.stopService()


def start_gateway(extra: dict[str, Any] | None = None, **sip: Any) -> RunningGateway:
    return RunningGateway(gateway_config(extra, **sip))



async def http(
    method: str,
    url: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    trust: ssl.Certificate | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP(S) request on the test reactor: (status, headers lower-cased, body)."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust) if trust is not None else BrowserLikePolicyForHTTPS()
    agent = Agent(reactor, contextFactory=policy, pool=pool, connectTimeout=5)
    h = Headers({})
    if key is not None:
        h.addRawHeader("authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        h.addRawHeader(k, v)
    producer = FileBodyProducer(io.BytesIO(body)) if body is not None else None
    d = agent.request(method.encode(), url.encode(), h, producer)
    d.addTimeout(10, reactor)
    resp = await d
    data = await readBody(resp)
    hdrs = {k.decode().lower(): v[0].decode() for k, v in resp.headers.getAllRawHeaders()}
    return resp.code, hdrs, data


async def api(method: str, path: str, key: str | None = ADMIN_KEY, base: str = "") -> tuple[int, Any]:
    status, _h, body = await http(method, base + path, key=key)
    return status, json.loads(body) if body.strip() else None


async def local_call(gw: RunningGateway, destination: str = "echo", tone_hz: float = 1000.0, **kw: Any) -> tuple[Any, LocalLeg]:
    """Place a LocalLeg call and wait for the answer."""
    leg = LocalLeg(tone_hz=tone_hz)
    call = gw.manager.place_call(leg, destination, **kw)
    leg.start_source(call)
    assert await wait_for(lambda: call.state is CallState.ANSWERED, 10), f"not answered: {call.state} {call.end_cause}"
    return call, leg


def twistd_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


__all__ = [
    "ADMIN_KEY", "TWISTD", "RunningGateway", "api", "gateway_config", "http", "local_call", "self_signed",
    "sleep", "start_gateway", "twistd_env", "wait_for",
]
