"""The WebSocket Origin allow-list, sans-IO."""

from __future__ import annotations

import pytest

from webgate.security.origin import normalise_origin, origin_allowed


@pytest.mark.parametrize(
    "origin, host, allowed, secure, ok",
    [
        # no Origin header: not a browser
        (None, "gw:8080", (), False, True),
        (None, "gw:8080", ("https://shop.example",), False, True),
        # same origin (default list)
        ("http://gw:8080", "gw:8080", (), False, True),
        ("http://GW:8080", "gw:8080", (), False, True),
        ("http://gw", "gw:80", (), False, True),
        ("http://gw:80", "gw", (), False, True),
        ("https://gw", "gw", (), True, True),
        ("https://gw", "gw:443", (), True, True),
        ("http://[::1]:8080", "[::1]:8080", (), False, True),
        ("http://evil:8080", "gw:8080", (), False, False),
        ("http://gw:8081", "gw:8080", (), False, False),
        ("http://gw.evil.example:8080", "gw:8080", (), False, False),
        ("null", "gw:8080", (), False, False),
        ("http://gw:8080", None, (), False, False),
        ("http://gw:8080/path", "gw:8080", (), False, False),
        ("garbage", "gw:8080", (), False, False),
        # explicit list
        ("https://shop.example", "gw:8080", ("https://shop.example",), False, True),
        ("https://SHOP.example:443", "gw:8080", ("https://shop.example",), False, True),
        ("http://shop.example", "gw:8080", ("https://shop.example",), False, False),
        ("https://shop.example:8443", "gw:8080", ("https://shop.example",), False, False),
        ("https://evil.example", "gw:8080", ("https://shop.example",), False, False),
        ("http://gw:8080", "gw:8080", ("https://shop.example",), False, False),  # the list replaces same-origin
        # any
        ("https://evil.example", "gw:8080", ("*",), False, True),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...], secure: bool, ok: bool) -> None:
    assert origin_allowed(origin, host, allowed, secure) is ok


def test_normalise() -> None:
    assert normalise_origin("HTTPS://Example.COM:443/") == "https://example.com"
    assert normalise_origin("http://example.com:8080") == "http://example.com:8080"
    assert normalise_origin("http://user@example.com") is None
    assert normalise_origin("http://example.com:99999") is None
