"""The dial plan's [[route]] table (webgate/calls/dialplan.py ``match_route``/``rewrite_for``): the
first route whose pattern fully matches wins, its rewrite gives the request-URI user, and a
match never shows the trunk's password. Parsing and checking the table: tests/test_config.py."""

from __future__ import annotations

import tomllib

from webgate.calls.dialplan import match_route, rewrite_for
from webgate.config import Config, default_config, parse_config

ROUTES = """
[[trunk]]
name = "pbx"
target = "sip:pbx.example.com:5060"
username = "gw"
password = "s3cret-pass"

[[trunk]]
name = "ivr"
target = "sips:ivr.example.com"
transport = "tls"

[[route]]
pattern = "9(\\\\d+)"
trunk = "pbx"
rewrite = "00{1}"
max_duration_s = 60

[[route]]
pattern = "(?P<ext>\\\\d{3})"
trunk = "ivr"
rewrite = "ext-{ext}-{dest}"
public = true

[[route]]
pattern = ".*"
trunk = "pbx"

[limits]
max_call_duration_s = 120
"""


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text), "test.toml")


def test_no_routes_only_builtins_are_callable() -> None:
    assert match_route(default_config(), "echo") is None


def test_first_match_wins_and_rewrites() -> None:
    config = parse(ROUTES)
    m = match_route(config, "9123")
    assert m is not None
    assert (m.trunk.name, m.user, m.max_duration_s, m.route.public) == ("pbx", "00123", 60, False)
    m = match_route(config, "123")
    assert m is not None
    assert (m.trunk.name, m.user, m.max_duration_s, m.route.public) == ("ivr", "ext-123-123", 120, True)
    m = match_route(config, "abc")  # catch-all, default rewrite {dest}
    assert m is not None and (m.trunk.name, m.user) == ("pbx", "abc")
    # fullmatch, not search: "91x" is not route 0 (needs digits only) -> catch-all
    m = match_route(config, "91x")
    assert m is not None and m.route.pattern == ".*"


def test_rewrite_for_one_route() -> None:
    first = parse(ROUTES).routes[0]
    assert rewrite_for(first, "9123") == "00123"
    assert rewrite_for(first, "91x") is None  # fullmatch
    assert rewrite_for(first, "x9123") is None


def test_password_never_in_a_match() -> None:
    config = parse(ROUTES)
    assert config.trunk("pbx").password == "s3cret-pass"
    assert "s3cret-pass" not in repr(match_route(config, "9123"))
