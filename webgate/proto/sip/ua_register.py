"""The user agent's registration client: a mixin over :class:`ua_core.UACore`.
Part of :mod:`useragent`."""

from __future__ import annotations

from webgate.proto.sip import auth
from webgate.proto.sip.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    SipURI,
    check_user,
)
from webgate.proto.sip.transaction import Addr, TransactionState
from webgate.proto.sip.ua_core import UACore
from webgate.proto.sip.ua_session import Registered, Registration, RegistrationFailed
from webgate.proto.sip.ua_types import ALLOW, Credentials, challenge_of


class Registrar(UACore):
    """REGISTER bindings kept refreshed (RFC 3261 §10.2), with digest credentials, 423
    Min-Expires and failover between the registrar's located servers (RFC 3263 §4.3)."""

    # --- REGISTER ------------------------------------------------------------------------
    def register(self, aor: SipURI, registrar: SipURI, now: float, *, credentials: Credentials | None = None,
                 expires: int = 300, transport: str | None = None,
                 destinations: list[Addr] | None = None) -> Registration:
        """REGISTER ``aor`` at ``registrar`` and keep it refreshed. ``destinations``: where to
        send it, in order (the registrar's RFC 3263 targets); the next one is tried after a 503,
        a transport error or no answer (Timer F, or ``failover_timeout`` with nothing back)."""
        if aor.user is not None:
            check_user(aor.user, "registration user")
        t = (transport or registrar.transport).lower()
        reg = Registration(self, aor, registrar, credentials, expires, t)
        self.registrations.append(reg)
        self.set_register_destinations(reg, destinations or [])
        self._send_register(reg, now)
        return reg

    def set_register_destinations(self, reg: Registration, destinations: list[Addr]) -> None:
        """New RFC 3263 targets for ``reg`` (a DNS refresh): the server in use stays in use
        while it is still among them; those without a listener of their transport are left out."""
        usable = [d for d in destinations if d[0] in self.config.endpoints]
        current = reg.destinations[reg.dest_index] if reg.destinations else None
        reg.destinations = usable
        reg.dest_index = usable.index(current) if current in usable else 0
        if usable:
            reg.transport = usable[reg.dest_index][0]

    def _register_failover(self, reg: Registration, now: float) -> bool:
        """After a 503 or no answer, the REGISTER goes to the next located server; False when
        there is none (the next attempt, 30 s later, starts again from the first)."""
        if reg.dest_index + 1 >= len(reg.destinations):
            reg.dest_index = 0
            if reg.destinations:
                reg.transport = reg.destinations[0][0]
            return False
        reg.dest_index += 1
        reg.transport = reg.destinations[reg.dest_index][0]
        reg.auth_attempts = 0
        self._send_register(reg, now, expires=None if reg.active else 0)
        return True

    def _register_failover_timer(self, reg: Registration, now: float) -> None:
        txn = reg.txn
        if txn is None or txn.state is not TransactionState.TRYING or reg.dest_index + 1 >= len(reg.destinations):
            return
        self.tm.abandon(txn)
        self._by_txn.pop(id(txn), None)
        reg.txn = None
        self._register_failover(reg, now)

    def unregister(self, reg: Registration, now: float) -> None:
        reg.active = False
        reg.refresh_at = None
        self._send_register(reg, now, expires=0)

    def forget(self, reg: Registration, now: float, *, unregister: bool = True) -> None:
        """Stop keeping ``reg``: with ``unregister`` its binding is removed (``Expires: 0``),
        else it is only no longer refreshed; either way the user agent drops it (an answer to its
        last REGISTER still finds it, by transaction)."""
        if unregister:
            self.unregister(reg, now)
        else:
            reg.active = False
            reg.refresh_at = None
        if reg in self.registrations:
            self.registrations.remove(reg)

    def _send_register(self, reg: Registration, now: float, expires: int | None = None,
                       authorization: tuple[str, str] | None = None) -> None:
        reg.cseq += 1
        h = Headers()
        h.add("Via", self._via(reg.transport))
        h.add("Max-Forwards", "70")
        aor = reg.aor
        h.add("From", str(NameAddr(aor, None, {"tag": reg.tag})))
        h.add("To", str(NameAddr(aor)))
        h.add("Call-ID", reg.call_id)
        h.add("CSeq", f"{reg.cseq} REGISTER")
        h.add("Contact", self._contact(reg.transport, aor.user))
        h.add("Expires", str(reg.expires if expires is None else expires))
        h.add("Allow", ALLOW)
        h.add("User-Agent", self.config.user_agent)
        if authorization:
            h.add(*authorization)
        ruri = SipURI(scheme=reg.registrar.scheme, host=reg.registrar.host, port=reg.registrar.port)
        if reg.registrar.params.get("transport"):
            ruri.params["transport"] = reg.registrar.params["transport"]
        req = SipRequest(headers=h, method="REGISTER", uri=ruri)
        if reg.destinations:
            dest = reg.destinations[reg.dest_index]
        else:
            dest = self._dest_for(self.config.outbound_proxy or reg.registrar, reg.transport)
        txn = self.tm.send_request(req, dest, now)
        reg.txn = txn
        self._track(txn, "register", reg)
        more = reg.dest_index + 1 < len(reg.destinations)
        reg.failover_at = now + self.config.failover_timeout if more and self.config.failover_timeout > 0 else None

    def _on_register_response(self, reg: Registration, resp: SipResponse, now: float) -> None:
        if reg.txn is not None and resp.cseq.number == reg.txn.request.cseq.number:
            reg.failover_at = None  # the server answers: no failover for lack of an answer
        if resp.status < 200:
            return
        if resp.status == 503 and self._register_failover(reg, now):
            return
        if 200 <= resp.status < 300:
            reg.auth_attempts = 0
            if not reg.active:
                return
            expires = reg.expires
            for c in resp.contacts:
                ce = c.params.get("expires")
                if ce and ce.isdigit():
                    expires = int(ce)
                    break
            else:
                eh = resp.headers.get("Expires")
                if eh and eh.strip().isdigit():
                    expires = int(eh.strip())
            reg.registered_expires = expires
            reg.refresh_at = now + max(5.0, expires * 0.8 if expires > 30 else expires - 5.0)
            self._events.append(Registered(reg, expires))
            return
        if resp.status in (401, 407) and reg.credentials is not None and reg.auth_attempts < 2:
            ch = challenge_of(resp)
            if ch is not None:
                if reg.auth_attempts == 0 or getattr(ch, "stale", False):
                    reg.auth_attempts += 1
                    ruri = SipURI(scheme=reg.registrar.scheme, host=reg.registrar.host, port=reg.registrar.port)
                    if reg.registrar.params.get("transport"):
                        ruri.params["transport"] = reg.registrar.params["transport"]
                    value = auth.build_authorization(ch, "REGISTER", str(ruri), reg.credentials.username,
                                                     reg.credentials.password)
                    hdr = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                    self._send_register(reg, now, expires=None if reg.active else 0, authorization=(hdr, value))
                    return
        if resp.status == 423:
            mn = resp.headers.get("Min-Expires")
            if mn and mn.strip().isdigit() and reg.active:
                reg.expires = int(mn.strip())
                self._send_register(reg, now)
                return
        reg.auth_attempts = 0
        self._events.append(RegistrationFailed(reg, resp.status, resp.reason))
        if reg.active:
            reg.refresh_at = now + 30.0
