"""What the gateway's listeners share: :class:`ListenError` (a socket that cannot be opened, the
one line twistd prints) and TLS contexts built from PEM files.

Used by ``webgate.gateway`` (HTTP/HTTPS, RTMP/RTMPS listeners) and ``webgate.telephony`` (SIP
TLS, and the CA bundle that verifies outgoing SIP TLS), which is why it is a module of its own.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.error import CannotListenError

__all__ = ["ListenError", "pem_certificates", "tls_server_context", "tls_trust_root"]


class ListenError(RuntimeError):
    """A listener could not open its socket (address in use, not local, no permission).

    Its text is the one line twistd prints before exiting 1 (webgate.tap), e.g.
    ``http: cannot listen on 127.0.0.1:8080: address already in use``."""

    @classmethod
    def from_cannot_listen(cls, name: str, address: object, error: CannotListenError) -> ListenError:
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        return cls(f"{name}: cannot listen on {address}: {reason[:1].lower()}{reason[1:]}")


def pem_certificates(data: bytes) -> list[bytes]:
    """Every ``CERTIFICATE`` block of a PEM file, in file order (leaf first, then its chain)."""
    return re.findall(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", data, re.DOTALL)


def tls_server_context(cert: str, key: str) -> Any:
    """A server TLS context factory from PEM files: ``cert`` holds the certificate, then any
    intermediate CA certificates (all of them are sent in the handshake, so clients that trust
    only the root verify the chain); ``key`` the private key (it may also be in ``cert``)."""
    from twisted.internet import ssl

    with open(cert, "rb") as f:
        cert_pem = f.read()
    with open(key, "rb") as f:
        key_pem = f.read()
    blocks = pem_certificates(cert_pem)
    if not blocks:
        raise ValueError(f"{cert}: no PEM certificate")
    leaf = ssl.PrivateCertificate.loadPEM(blocks[0] + b"\n" + key_pem)
    chain = [ssl.Certificate.loadPEM(b).original for b in blocks[1:]]
    return ssl.CertificateOptions(privateKey=leaf.privateKey.original, certificate=leaf.original, extraCertChain=chain)


def tls_trust_root(ca_file: str) -> Any:
    """A Twisted trust root with every certificate of a PEM CA bundle (not only the first)."""
    from twisted.internet import ssl

    with open(ca_file, "rb") as f:
        blocks = pem_certificates(f.read())
    if not blocks:
        raise ValueError(f"{ca_file}: no PEM certificate")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])
