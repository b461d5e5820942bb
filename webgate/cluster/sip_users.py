"""A cluster node's web users at Kamailio's registrar (``[cluster] registrar``, docs/cluster.md).

Each web user that registers on this node (WebSocket ``register``, a Flash RPC client) is
REGISTERed at the registrar with this node's contact (``sip:USER@`` the node's SIP listener), so
that a PBX's call for the user, sent to Kamailio, is routed by ``lookup("location")`` to this
node. The user agent's :class:`~webgate.proto.sip.useragent.Registration` refreshes it while the
user stays; when the user leaves (or its registration here expires) the binding is removed
(``Expires: 0``). Kamailio keeps one contact per user (``save`` flag ``0x04``), so the newest
registration across the cluster wins there too; a node whose user registered again elsewhere
stops refreshing its own (:meth:`SipUserRegistrations.superseded`), so it cannot take the route
back. A draining node removes its bindings with the trunks' (``TelephonyService.drain``
unregisters everything in its ``registrations`` list, which these join).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from webgate.logsafe import safe
from webgate.proto.errors import LocalProtocolError
from webgate.proto.sip.message import SipURI
from webgate.proto.sip.useragent import Registration, UserAgent

__all__ = ["REGISTER_EXPIRES_S", "SipUserRegistrations"]

log = Logger()

#: how long a binding lasts at the registrar unless refreshed (the UA refreshes before it ends)
REGISTER_EXPIRES_S = 300


class SipUserRegistrations:
    """This node's web users as bindings at one SIP registrar."""

    def __init__(self, ua: UserAgent, registrar: SipURI, clock: Callable[[], float], flush: Callable[[], None],
                 registrations: list[Any], expires: int = REGISTER_EXPIRES_S) -> None:
        self.ua = ua
        self.registrar = registrar
        self.clock = clock
        self.flush = flush
        #: the telephony service's list of REGISTER clients (its drain unregisters them)
        self.registrations = registrations
        self.expires = expires
        self.by_user: dict[str, Registration] = {}

    def register(self, user: str) -> None:
        """``user`` registered (again) on this node: bind it at the registrar, the newest binding."""
        self._drop(user, unregister=False)  # a fresh REGISTER (new Call-ID): the newest wins
        aor = SipURI(scheme="sip", user=user, host=self.registrar.host)
        try:
            reg = self.ua.register(aor, self.registrar, self.clock(), expires=self.expires)
        except LocalProtocolError as e:
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn()
                "cluster: web user {user} not registered at the registrar: {e}", user=safe(user), e=safe(e.message))
            return
        self.by_user[user] = reg
        self.registrations.append(reg)
        self.flush()

    def unregister(self, user: str) -> None:
        """``user`` left this node: remove its binding."""
        if self._drop(user, unregister=True):
            self.flush()

    def superseded(self, user: str) -> None:
        """``user`` registered on another node later: stop refreshing ours (the registrar holds
        the other node's contact now; removing ours is harmless, and tidier)."""
        if self._drop(user, unregister=True):
            log.info("cluster: web user {user} moved to another node; its binding here is removed", user=safe(user))
            self.flush()

    def _drop(self, user: str, *, unregister: bool) -> bool:
        reg = self.by_user.pop(user, None)
        if reg is None:
            return False
        if reg in self.registrations:
            self.registrations.remove(reg)
        self.ua.forget(reg, self.clock(), unregister=unregister)
        return True
