"""TLS listeners send the whole certificate chain from ``tls_cert`` (leaf + intermediate CA),
so clients that trust only the root CA verify them: HTTPS, RTMPS and SIP/TLS. And the SIP
UAC's ``[sip] tls_ca`` bundle is used whole (any of its CAs can be the one that signed the
trunk), not only its first certificate.

The PKI is made in the test (``cryptography``): a root CA, an intermediate CA signed by it,
and a leaf for 127.0.0.1/localhost signed by the intermediate. The client is Python's own
``ssl`` (OpenSSL) with ``cafile=root``, hostname checking on."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.calls.gw import assert_tone, sleep, wait_for
from tests.interop import peers
from tests.ops.helpers import start_gateway
from webgate.calls.call import CallState
from webgate.legs.local import LocalLeg


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, path_len: int | None = None) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path) -> dict[str, Path]:
    """root.pem, other_root.pem, chain.pem (leaf + intermediate), leaf.pem (leaf only), key.pem,
    bundle.pem (an unrelated CA first, then the root)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def pem(c: Any) -> bytes:
        return bytes(c.public_bytes(serialization.Encoding.PEM))

    root_key, inter_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root = _cert("webgate test root CA", root_key, "webgate test root CA", root_key, ca=True)
    other = _cert("some other CA", other_key, "some other CA", other_key, ca=True)
    inter = _cert("webgate test intermediate CA", inter_key, "webgate test root CA", root_key, ca=True, path_len=0)
    leaf = _cert("127.0.0.1", leaf_key, "webgate test intermediate CA", inter_key, ca=False)
    files = {
        "root": pem(root),
        "other_root": pem(other),
        "chain": pem(leaf) + pem(inter),
        "leaf": pem(leaf),
        "bundle": pem(other) + pem(root),
        "key": leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    out = {}
    for k, v in files.items():
        (d / f"{k}.pem").write_bytes(v)
        out[k] = d / f"{k}.pem"
    return out


def handshake(port: int, cafile: Path) -> str:
    """A TLS handshake to 127.0.0.1:port trusting only ``cafile``; the verified peer's CN."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        cert = s.getpeercert()
        return str(dict(x[0] for x in cert["subject"])["commonName"])


@pytest_twisted.ensureDeferred
async def test_https_rtmps_and_sip_tls_send_the_intermediate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert, key = str(pki["chain"]), str(pki["key"])
    gw = start_gateway(
        {
            "http": {"tls_listen": "127.0.0.1:0", "tls_cert": cert, "tls_key": key},
            "rtmp": {"listen": "", "tls_listen": "127.0.0.1:0", "tls_cert": cert, "tls_key": key},
            "sip": {"tls": "127.0.0.1:0", "tls_cert": cert, "tls_key": key},
        }
    )
    try:
        ports = {
            "https": gw.gw.listening_address("https").port,
            "rtmps": gw.gw.listening_address("rtmps").port,
            "sip-tls": gw.svc.bound["tls"][1],
        }
        for name, port in ports.items():
            cn = await deferToThread(handshake, port, pki["root"])
            print(f"\n{name} :{port}: chain verified against the root alone (leaf CN {cn})")
            assert cn == "127.0.0.1"
            # the client really checks: another CA does not verify it
            with pytest.raises(ssl.SSLCertVerificationError):
                await deferToThread(handshake, port, pki["other_root"])
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_a_leaf_without_its_intermediate_does_not_verify(tmp_path: Path) -> None:
    """The control: the same client refuses a server that sends only the leaf, so the test
    above depends on the intermediate being sent."""
    pki = make_pki(tmp_path)
    gw = start_gateway({"http": {"tls_listen": "127.0.0.1:0", "tls_cert": str(pki["leaf"]), "tls_key": str(pki["key"])}})
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await deferToThread(handshake, gw.gw.listening_address("https").port, pki["root"])
    finally:
        await gw.stop()


@pytest_twisted.ensureDeferred
async def test_sip_tls_trunk_with_chain_and_ca_bundle(tmp_path: Path) -> None:
    """SIP/TLS end to end: the gateway calls its own echo over a TLS trunk; its listener sends
    leaf + intermediate, its UAC trusts ``tls_ca`` = a bundle whose root is the SECOND CA."""
    from tests.calls.gw import start_telephony
    from tests.interop.test_sip_tcp_tls import self_trunk_config

    pki = make_pki(tmp_path)
    port = peers.free_port("tcp")
    svc = start_telephony(
        self_trunk_config("tls", port, tls_cert=str(pki["chain"]), tls_key=str(pki["key"]), tls_ca=str(pki["bundle"]))
    )
    try:
        leg = LocalLeg(tone_hz=1000.0)
        call = svc.manager.place_call(leg, "loop")
        leg.start_source(call)
        assert await wait_for(lambda: call.state is CallState.ANSWERED, 8), (call.state, call.end_cause)
        assert call.sip.transport == "tls"
        await sleep(1.5)
        assert_tone(leg.recording(), leg.received_rate or 8000, 1000.0, "echo over SIP/TLS (chain + CA bundle)")
        call.hangup()
        assert await wait_for(lambda: not svc.manager.builtin_calls and len(svc.registry) == 0, 5)
    finally:
        await svc.stopService()
