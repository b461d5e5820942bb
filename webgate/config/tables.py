"""The readers of the arrays of tables: ``[[trunk]]`` (with each trunk's ``codecs`` and
``headers``) and ``[[route]]`` (with its ``rewrite`` template checked against its pattern).

:class:`TrunkTables` is a mixin of the validator of :mod:`webgate.config.validate`, which reads
the trunks before the routes (a route names a trunk). Internal to :mod:`webgate.config`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from webgate.config.fields import (
    CONTROL_RE,
    MISSING,
    TOKEN_RE,
    Collector,
    Section,
    check_sip_user,
    check_text,
    parse_sip_uri,
    type_name,
)
from webgate.config.model import (
    KNOWN_CODECS,
    RECORD_MODES,
    RouteConfig,
    SipUri,
    TrunkConfig,
)

# Headers the SIP UA writes itself; a trunk may not set them.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Content-Length", "l", "Content-Type", "c", "Max-Forwards", "Route", "Record-Route", "Authorization", "Proxy-Authorization", "Content-Encoding", "e", "Supported", "k", "Allow",
              "Session-Expires", "x", "Min-SE", "RSeq", "RAck"]
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class TrunkTables(Collector):
    """The readers of ``[[trunk]]`` and ``[[route]]``."""

    #: every trunk name read, including those of trunks that had other errors (set by the validator)
    trunk_names: set[str]

    def trunks(self, items: Any) -> list[TrunkConfig]:
        if not isinstance(items, list):
            self.err("trunk", "must be an array of tables ([[trunk]])")
            return []
        out: list[TrunkConfig] = []
        seen: set[str] = set()
        defaults = TrunkConfig(name="", target=SipUri("sip", "", "x", None, "", "sip:x"))
        for i, item in enumerate(items):
            s = Section(self, f"trunk[{i}]", item, defaults)
            name = s.string("name", required=True)
            if isinstance(name, str):
                if not _NAME_RE.fullmatch(name):
                    self.err(s.key("name"), f"{name!r} is not a valid name (letters, digits, '_', '.', '-')")
                elif name in seen:
                    self.err(s.key("name"), f"duplicate trunk name {name!r}")
                seen.add(name)
                self.trunk_names.add(name)
            target = s.string("target", required=True)
            if isinstance(target, str):
                try:
                    target = parse_sip_uri(target)
                except ValueError:
                    self.err(s.key("target"), f"invalid SIP URI {target!r} (e.g. \"sip:pbx.example.com:5060\")")
                    target = MISSING
            values = dict(
                name=name,
                target=target,
                transport=s.choice("transport", ("udp", "tcp", "tls")),
                username=s.string("username", check=check_sip_user),
                password=s.string("password", check=check_text),
                auth_username=s.string("auth_username", check=check_text),
                realm=s.string("realm", check=check_text),
                register=s.boolean("register"),
                register_expires=s.integer("register_expires", 60, 86400),
                dtmf=s.choice("dtmf", ("rfc4733", "info")),
                codecs=self.codecs(s),
                headers=self.headers(s),
                from_user=s.string("from_user", check=check_sip_user),
                from_display=s.string("from_display", check=check_text),
                session_expires_s=s.integer("session_expires_s", 0, 86400),
                outbound_proxy=s.string("outbound_proxy"),
            )
            s.finish()
            if isinstance(values["outbound_proxy"], str):
                if values["outbound_proxy"] == "":
                    values["outbound_proxy"] = None
                else:
                    try:
                        values["outbound_proxy"] = parse_sip_uri(values["outbound_proxy"])
                    except ValueError:
                        self.err(s.key("outbound_proxy"), f"invalid SIP URI {values['outbound_proxy']!r} (e.g. \"sip:proxy.example.com;lr\")")
                        values["outbound_proxy"] = MISSING
            se = values["session_expires_s"]
            if isinstance(se, int) and 0 < se < 90:
                self.err(s.key("session_expires_s"), f"{se} is below 90 (RFC 4028's smallest Min-SE); 0 turns the session timer off")
            if values["register"] is True and values["username"] == "":
                self.err(s.key("username"), "is required when register = true")
            if isinstance(target, SipUri) and target.scheme == "sips" and values["transport"] not in ("tls", MISSING):
                self.err(s.key("transport"), "must be \"tls\" for a sips: target")
            t = self.build(TrunkConfig, values)
            if t is not MISSING:
                out.append(t)
        return out

    def codecs(self, s: Section) -> Any:
        s.known.add("codecs")
        if "codecs" not in s.table:
            return s.defaults.codecs
        value = s.table["codecs"]
        canon = {c.lower(): c for c in KNOWN_CODECS}
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            self.err(s.key("codecs"), f"must be a non-empty array of strings, not {value!r}")
            return MISSING
        out: list[str] = []
        for c in value:
            if c.lower() not in canon:
                self.err(s.key("codecs"), f"unknown codec {c!r} (known: {', '.join(KNOWN_CODECS)})")
                return MISSING
            if canon[c.lower()] in out:
                self.err(s.key("codecs"), f"duplicate codec {c!r}")
                return MISSING
            out.append(canon[c.lower()])
        return tuple(out)

    def headers(self, s: Section) -> Any:
        s.known.add("headers")
        if "headers" not in s.table:
            return ()
        value = s.table["headers"]
        if not isinstance(value, Mapping):
            self.err(s.key("headers"), f"must be a table of header = \"value\", not {type_name(value)}")
            return MISSING
        out: list[tuple[str, str]] = []
        ok = True
        for name, val in value.items():
            key = f"{s.key('headers')}.{name}"
            if not TOKEN_RE.fullmatch(name):
                self.err(key, f"{name!r} is not a valid SIP header name (token)")
                ok = False
            elif name.lower() in _RESERVED_HEADERS:
                self.err(key, f"{name!r} is set by the SIP stack and cannot be configured")
                ok = False
            elif not isinstance(val, str):
                self.err(key, f"must be a string, not {type_name(val)}")
                ok = False
            elif CONTROL_RE.sub("", val.replace("\t", " ")) != val.replace("\t", " "):
                self.err(key, "value must not contain CR, LF or other control characters")
                ok = False
            else:
                out.append((name, val))
        return tuple(out) if ok else MISSING

    def routes(self, items: Any, trunks: list[TrunkConfig]) -> list[RouteConfig]:
        if not isinstance(items, list):
            self.err("route", "must be an array of tables ([[route]])")
            return []
        names = self.trunk_names  # including trunks that had other errors
        out: list[RouteConfig] = []
        defaults = RouteConfig(pattern="", trunk="")
        for i, item in enumerate(items):
            s = Section(self, f"route[{i}]", item, defaults)
            pattern = s.string("pattern", required=True)
            regex: Any = MISSING
            if isinstance(pattern, str):
                try:
                    regex = re.compile(pattern)
                except re.error as e:
                    self.err(s.key("pattern"), f"invalid regular expression {pattern!r}: {e}")
            trunk = s.string("trunk", required=True)
            if isinstance(trunk, str) and trunk not in names:
                self.err(s.key("trunk"), f"no trunk named {trunk!r}")
            rewrite = s.string("rewrite")
            if isinstance(rewrite, str) and regex is not MISSING:
                problem = _check_rewrite(rewrite, regex)
                if problem:
                    self.err(s.key("rewrite"), problem)
                    rewrite = MISSING
            values = dict(
                pattern=pattern,
                trunk=trunk,
                rewrite=rewrite,
                public=s.boolean("public"),
                max_duration_s=s.integer("max_duration_s", 0),
                transfer=s.boolean("transfer"),
                record=s.choice("record", RECORD_MODES),
                record_on_request=s.boolean("record_on_request"),
                regex=regex,
            )
            s.finish()
            r = self.build(RouteConfig, values)
            if r is not MISSING:
                out.append(r)
        return out


def _check_rewrite(rewrite: str, regex: re.Pattern[str]) -> str | None:
    try:
        parsed = list(string.Formatter().parse(rewrite))
    except ValueError as e:
        return f"invalid format string {rewrite!r}: {e}"
    allowed = {"dest", *map(str, range(regex.groups + 1)), *regex.groupindex}
    for _literal, fname, spec, conv in parsed:
        if fname is None:
            continue
        if fname not in allowed:
            return (
                f"unknown field {{{fname}}} in {rewrite!r} (use {{dest}}, {{0}}..{{{regex.groups}}}"
                + "".join(f", {{{n}}}" for n in regex.groupindex)
                + ")"
            )
        if spec or conv:
            return f"format specs and conversions are not allowed in {rewrite!r}"
    if not any(fname is not None for _l, fname, _s, _c in parsed) and not rewrite:
        return "must not be empty"
    return None
