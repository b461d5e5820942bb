"""The call registry: the only shared state of the gateway.

An interface, so that a shared (e.g. Redis-backed) registry can replace the in-memory one
when the gateway runs as several processes behind a SIP load balancer.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from webgate.calls.call import Call


class CallRegistry(abc.ABC):
    @abc.abstractmethod
    def add(self, call: "Call") -> None: ...

    @abc.abstractmethod
    def remove(self, call: "Call") -> None: ...

    @abc.abstractmethod
    def by_session_id(self, session_id: str) -> "Call | None": ...

    @abc.abstractmethod
    def by_sip_call_id(self, call_id: str) -> "Call | None": ...

    @abc.abstractmethod
    def bind_sip_call_id(self, call: "Call", call_id: str) -> None: ...

    @abc.abstractmethod
    def by_client(self, client: str) -> list["Call"]: ...

    @abc.abstractmethod
    def __iter__(self) -> Iterator["Call"]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def count(self, *, ingress: str | None = None, client: str | None = None, identity: str | None = None) -> int:
        n = 0
        for c in self:
            if ingress is not None and c.ingress_kind != ingress:
                continue
            if client is not None and c.client != client:
                continue
            if identity is not None and c.identity != identity:
                continue
            n += 1
        return n


class InMemoryCallRegistry(CallRegistry):
    def __init__(self) -> None:
        self._by_sid: dict[str, "Call"] = {}
        self._by_sip: dict[str, "Call"] = {}

    def add(self, call: "Call") -> None:
        if call.session_id in self._by_sid:
            raise KeyError(f"session ID {call.session_id} already registered")
        self._by_sid[call.session_id] = call

    def remove(self, call: "Call") -> None:
        if self._by_sid.get(call.session_id) is call:
            del self._by_sid[call.session_id]
        for k in [k for k, v in self._by_sip.items() if v is call]:
            del self._by_sip[k]

    def by_session_id(self, session_id: str) -> "Call | None":
        return self._by_sid.get(session_id)

    def by_sip_call_id(self, call_id: str) -> "Call | None":
        return self._by_sip.get(call_id)

    def bind_sip_call_id(self, call: "Call", call_id: str) -> None:
        self._by_sip[call_id] = call

    def by_client(self, client: str) -> list["Call"]:
        return [c for c in self._by_sid.values() if c.client == client]

    def __iter__(self) -> Iterator["Call"]:
        return iter(list(self._by_sid.values()))

    def __len__(self) -> int:
        return len(self._by_sid)
