"""webgate.config: defaults, validation messages naming keys, overrides (the dial plan's matching of
[[route]]: tests/calls/test_dialplan_routes.py)."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webgate import __version__, cli
from webgate.config import (
    Config,
    ConfigError,
    HostPort,
    default_config,
    load_config,
    parse_config,
    parse_host_port,
)

ROOT = Path(__file__).resolve().parents[1]

TRUNK = """
[[trunk]]
name = "pbx"
target = "sip:pbx.example.com:5060"
"""


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text), "test.toml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


# -- defaults and the documents that describe them


def test_embedded_default_equals_dataclass_defaults() -> None:
    config = default_config()
    assert config == Config()
    assert config.http.listen == HostPort("127.0.0.1", 8080)
    assert config.sip.tls is None
    assert config.sip.user_agent == f"webgate/{__version__}"
    assert config.trunks == () and config.routes == ()


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert load_config(path) == default_config()


def test_example_file_is_the_default() -> None:
    assert load_config(ROOT / "webgate.example.toml") == default_config()


def _all_keys() -> list[tuple[str, str]]:
    """(section heading as in the docs, key) for every key of the file format."""
    from webgate.config import RouteConfig, TrunkConfig

    keys = []
    for f in dataclasses.fields(Config):
        if f.name in ("source", "trunks", "routes"):
            continue
        keys += [(f"[{f.name}]", g.name) for g in dataclasses.fields(getattr(Config(), f.name))]
    keys += [("[[trunk]]", g.name) for g in dataclasses.fields(TrunkConfig)]
    keys += [("[[route]]", g.name) for g in dataclasses.fields(RouteConfig) if g.name != "regex"]
    return keys


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    sections = {m[1]: m[2] for m in re.finditer(r"^## `([^`]+)`\n(.*?)(?=^## |\Z)", doc, re.MULTILINE | re.DOTALL)}
    example = (ROOT / "webgate.example.toml").read_text()
    for section, name in _all_keys():
        assert section in sections, f"no '## `{section}`' in docs/configuration.md"
        assert f"| `{name}` |" in sections[section], f"{section} {name} missing from docs/configuration.md"
        assert re.search(rf"^#? ?{name} = ", example, re.MULTILINE), f"{section} {name} missing from webgate.example.toml"


# -- a good configuration


GOOD = (
    TRUNK
    + """
username = "gw"
password = "s3cret-pass"
register = true
transport = "tcp"
codecs = ["pcma", "PCMU"]
headers = { "X-Gateway" = "webgate", "X-Tab" = "a\tb" }

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

[sip]
udp = "[::1]:5070"
tcp = ""
advertised_address = "[2001:db8::1]"
outbound_proxy = "sip:proxy.example.com:5060;lr"

[limits]
max_call_duration_s = 120
"""
)


def test_good_config() -> None:
    config = parse(GOOD)
    assert config.sip.udp == HostPort("::1", 5070) and str(config.sip.udp) == "[::1]:5070"
    assert config.sip.tcp is None
    assert config.sip.advertised_address == "2001:db8::1"
    assert config.sip.outbound_proxy is not None and config.sip.outbound_proxy.port == 5060
    pbx = config.trunk("pbx")
    assert pbx.codecs == ("PCMA", "PCMU")  # canonical spelling, file order
    assert pbx.headers == (("X-Gateway", "webgate"), ("X-Tab", "a\tb"))
    assert pbx.target.host == "pbx.example.com" and pbx.target.port == 5060
    assert config.trunk("ivr").target.scheme == "sips"


def test_password_never_in_repr_or_str() -> None:
    config = parse(GOOD)
    assert config.trunk("pbx").password == "s3cret-pass"
    assert "s3cret-pass" not in repr(config)
    assert "s3cret-pass" not in str(config)


# -- errors name the key


BAD = [
    ("[sip]\nudp = 'x:99999'", "sip.udp: invalid address 'x:99999'"),
    ("[sip]\nudp = '127.0.0.1:65536'", "sip.udp: invalid address"),
    ("[sip]\ntcp = '127.0.0.1'", "sip.tcp: invalid address"),
    ("[sip]\ntcp = '::1:5060'", "sip.tcp: invalid address"),
    ("[sip]\ntcp = '[127.0.0.1]:5060'", "sip.tcp: invalid address"),
    ("[http]\nlisten = 8080", "http.listen: must be a string"),
    ("[http]\nlisten = 'bad host!:80'", "http.listen: invalid address"),
    ("[http]\nport = 1", "http.port: unknown key"),
    ("[htp]\nlisten = ''", "htp: unknown section"),
    ("debug = true", "debug: unknown key"),
    ("http = 1", "http: must be a table"),
    ("[sip]\nt1_ms = true", "sip.t1_ms: must be an integer, not boolean"),
    ("[sip]\nt1_ms = '500'", "sip.t1_ms: must be an integer"),
    ("[sip]\nt1_ms = 500.0", "sip.t1_ms: must be an integer"),
    ("[sip]\nt1_ms = 0", "sip.t1_ms: 0 is out of range"),
    ("[sip]\nt1_ms = 600\nt2_ms = 500", "sip.t2_ms: 500 must be >= sip.t1_ms"),
    ("[sip]\ntls = '0.0.0.0:5061'", "sip.tls_cert: is required when sip.tls is set"),
    ("[sip]\ntls_cert = '/nonexistent.pem'", "sip.tls_cert: file not found"),
    ("[sip]\nadvertised_address = '1.2.3.4:5060'", "sip.advertised_address: invalid host"),
    ("[sip]\noutbound_proxy = 'proxy.example.com'", "sip.outbound_proxy: invalid SIP URI"),
    ('[sip]\nuser_agent = "a\\r\\nX: y"', "sip.user_agent: must not contain control characters"),
    ("[rtp]\nport_min = 20001", "rtp.port_min: 20001 must be even"),
    ("[rtp]\nport_min = 30000\nport_max = 20000", "rtp.port_max: 20000 must be greater than rtp.port_min"),
    ("[rtp]\nport_max = 70000", "rtp.port_max: 70000 is out of range"),
    ("[rtp]\nbind = ''", "rtp.bind: invalid host"),
    ("[rtp]\njitter_min_ms = 300", "rtp.jitter_max_ms: 200 must be >= rtp.jitter_min_ms"),
    ("[rtp]\nstrict_source = 'yes'", "rtp.strict_source: must be true or false"),
    ("[rtp]\nrelearn_after_s = -1", "rtp.relearn_after_s: -1 is out of range"),
    ("[session_id]\nlength = 7", "session_id.length: 7 is out of range (8..10)"),
    ("[session_id]\nheader = 'X Session'", "session_id.header: 'X Session' is not a valid SIP header name"),
    ("[session_id]\nmode = 'cookie'", "session_id.mode: must be one of"),
    ("[builtin]\nenabled = 'yes'", "builtin.enabled: must be true or false"),
    ("[builtin]\ntone = 'echo'", "builtin.tone: must differ from builtin.echo"),
    ("[builtin]\necho = 'e cho'", "builtin.echo: 'e cho' is not a valid destination name"),
    ("[limits]\nmax_calls = 0", "limits.max_calls: 0 is out of range"),
    ("[log]\nformat = 'xml'", "log.format: must be one of 'text', 'json'"),
    ("[log]\nlevel = 'loud'", "log.level: must be one of"),
    ("[[trunk]]\ntarget = 'sip:a.example'", "trunk[0].name: is required"),
    ("[[trunk]]\nname = 'a'", "trunk[0].target: is required"),
    (TRUNK + TRUNK, "trunk[1].name: duplicate trunk name 'pbx'"),
    (TRUNK + "foo = 1", "trunk[0].foo: unknown key"),
    ("[[trunk]]\nname = 'a'\ntarget = 'http://x'", "trunk[0].target: invalid SIP URI 'http://x'"),
    ("[[trunk]]\nname = 'a'\ntarget = 'sip:x:99999'", "trunk[0].target: invalid SIP URI"),
    (TRUNK + "transport = 'sctp'", "trunk[0].transport: must be one of 'udp', 'tcp', 'tls'"),
    (TRUNK + "register = true", "trunk[0].username: is required when register = true"),
    (TRUNK + "dtmf = 'inband'", "trunk[0].dtmf: must be one of"),
    (TRUNK + "codecs = []", "trunk[0].codecs: must be a non-empty array"),
    (TRUNK + "codecs = ['PCMU', 'speex9']", "trunk[0].codecs: unknown codec 'speex9'"),
    (TRUNK + "codecs = ['PCMU', 'pcmu']", "trunk[0].codecs: duplicate codec"),
    (TRUNK + "headers = { 'X Bad' = 'v' }", "trunk[0].headers.X Bad: 'X Bad' is not a valid SIP header name"),
    (TRUNK + 'headers = { "X-A" = "v\\r\\nVia: evil" }', "trunk[0].headers.X-A: value must not contain CR, LF"),
    (TRUNK + "headers = { 'X-A' = 1 }", "trunk[0].headers.X-A: must be a string"),
    (TRUNK + "headers = { 'Call-ID' = 'x' }", "trunk[0].headers.Call-ID: 'Call-ID' is set by the SIP stack"),
    (TRUNK + "headers = 'X-A: b'", "trunk[0].headers: must be a table"),
    ("[[trunk]]\nname = 'a'\ntarget = 'sips:x.example'", "trunk[0].transport: must be \"tls\" for a sips: target"),
    (TRUNK + 'password = "a\\nb"', "trunk[0].password: must not contain control characters"),
    ("[[route]]\npattern = '1'", "route[0].trunk: is required"),
    (TRUNK + "[[route]]\ntrunk = 'pbx'", "route[0].pattern: is required"),
    (TRUNK + "[[route]]\npattern = '('\ntrunk = 'pbx'", "route[0].pattern: invalid regular expression '('"),
    (TRUNK + "[[route]]\npattern = '1'\ntrunk = 'nope'", "route[0].trunk: no trunk named 'nope'"),
    (TRUNK + "[[route]]\npattern = '(1)'\ntrunk = 'pbx'\nrewrite = '{2}'", "route[0].rewrite: unknown field {2}"),
    (TRUNK + "[[route]]\npattern = '1'\ntrunk = 'pbx'\nrewrite = '{x}'", "route[0].rewrite: unknown field {x}"),
    (TRUNK + "[[route]]\npattern = '1'\ntrunk = 'pbx'\nrewrite = '{dest.__class__}'", "route[0].rewrite: unknown field"),
    (TRUNK + "[[route]]\npattern = '1'\ntrunk = 'pbx'\nrewrite = '{dest!r}'", "route[0].rewrite: format specs"),
    (TRUNK + "[[route]]\npattern = '1'\ntrunk = 'pbx'\nrewrite = '{'", "route[0].rewrite: invalid format string"),
    (TRUNK + "[[route]]\npattern = '1'\ntrunk = 'pbx'\nmax_duration_s = -1", "route[0].max_duration_s: -1 is out of range"),
    ("[route]\npattern = '1'", "route: must be an array of tables"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_bad_config_names_the_key(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(expected) or expected in e for e in errors), errors


def test_all_errors_reported_together_with_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse("[sip]\nudp = 'x'\n[rtp]\nport_min = 3\n[log]\nfoo = 1")
    e = info.value
    assert len(e.errors) == 3
    assert str(e).splitlines()[0].startswith("test.toml: sip.udp:")


def test_trunk_with_errors_still_counts_for_routes() -> None:
    errors = errors_of(TRUNK + "dtmf = 'x'\n[[route]]\npattern = '1'\ntrunk = 'pbx'")
    assert errors == [e for e in errors if e.startswith("trunk[0].dtmf")]


# -- files and overrides


def test_overrides_win_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[http]\nlisten = '127.0.0.1:1'\n[sip]\nudp = '127.0.0.1:2'\n")
    config = load_config(path, {"http.listen": "[::1]:3", "rtp.port_min": 30000, "rtp.port_max": 30009})
    assert config.http.listen == HostPort("::1", 3)
    assert config.sip.udp == HostPort("127.0.0.1", 2)  # from the file
    assert (config.rtp.port_min, config.rtp.port_max, config.rtp.port_pairs) == (30000, 30009, 5)
    assert config.source == str(path)


def test_override_of_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="sip.nope: cannot be overridden"):
        load_config(None, {"sip.nope": 1})


def test_bad_override_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sip.udp: invalid address '1.2.3.4:0x'"):
        load_config(None, {"sip.udp": "1.2.3.4:0x"})


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sip\n")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML: .*line 1"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert cli.main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "pbx, ivr" in out and "s3cret" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[rtp]\nport_min = 3")
    assert cli.main(["check-config", str(bad)]) == 1
    assert "rtp.port_min:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


# -- address parsing properties

hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
)


@given(hosts, st.integers(0, 65535))
def test_host_port_round_trip(host: str, port: int) -> None:
    hp = HostPort(host, port)
    assert parse_host_port(str(hp)) == hp


@given(st.text(max_size=40))
def test_parse_host_port_only_raises_value_error(text: str) -> None:
    try:
        hp = parse_host_port(text)
    except ValueError:
        return
    assert 0 <= hp.port <= 65535 and hp.host
