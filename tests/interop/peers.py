"""Run real SIP peers (SIPp, baresip, Kamailio) on 127.0.0.1 for interop tests.

No pytest dependency: ``conftest.py`` wraps these in fixtures. Everything here binds to 127.0.0.1 only and
to ports chosen at run time (``free_port``); configs and logs go to a directory the caller gives (pytest's
``tmp_path``). Every process started here is started by PID and killed by PID (process group) in ``stop()``.

Also: small audio helpers (``make_tone_wav``, ``make_ulaw_wav``, ``dominant_frequency``, ``rms_dbfs``) that
are private to the interop tests on purpose (webgate/media/analysis.py has its own).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOOPBACK = "127.0.0.1"
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
SELFTEST_SCENARIOS = SCENARIOS / "selftest"


class PeerError(RuntimeError):
    """A peer failed to start or misbehaved."""


# --------------------------------------------------------------------------------------------- ports

_issued: set[int] = set()


def _can_bind(port: int, kind: str, host: str = LOOPBACK) -> bool:
    kinds = {"udp": [socket.SOCK_DGRAM], "tcp": [socket.SOCK_STREAM],
             "both": [socket.SOCK_DGRAM, socket.SOCK_STREAM]}[kind]
    for st in kinds:
        s = socket.socket(socket.AF_INET, st)
        try:
            if st == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def _xdist_slice(lo: int, hi: int) -> tuple[int, int]:
    """Under pytest-xdist, worker gwI of N gets the I-th of N equal slices of [lo, hi), so two workers
    never pick the same port (a check-then-bind race between them); otherwise [lo, hi) itself."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        size = (hi - lo) // int(count)
        lo += size * int(worker[2:])
        hi = lo + size
    return lo, hi


def _port_ranges() -> list[tuple[int, int]]:
    """Where peers' ports come from: below the ephemeral range, and outside the gateways' RTP ranges
    (20000-20999, the default, and 30000-39999, tests/calls/gw.py's rtp_range) so that a gateway's
    port pool never takes a port a peer was given before the peer binds it."""
    top = min(_ephemeral_floor(), 65536) - 64
    ranges = [(12000, 20000), (21000, min(30000, top))]
    return [_xdist_slice(lo, hi) for lo, hi in ranges if hi > lo]


def free_port(kind: str = "udp") -> int:
    """A port free on 127.0.0.1 (and 0.0.0.0) for ``kind`` = "udp", "tcp" or "both".

    Ports come from below the kernel's ephemeral range (ip_local_port_range), so no outgoing
    connection of any process can be given the port between this check and the peer's own bind
    (a CI run failed on exactly that: baresip's TLS listener lost its port to a client socket).
    Ports handed out earlier by this process are never handed out again, so several peers started
    in one test cannot collide with each other."""
    if kind not in ("udp", "tcp", "both"):
        raise ValueError(f"kind must be udp, tcp or both, not {kind!r}")
    ranges = _port_ranges()
    for _ in range(2000):
        lo, hi = _rng.choice(ranges)
        port = _rng.randrange(lo, hi)
        if port in _issued:
            continue
        if _can_bind(port, kind) and _can_bind(port, kind, "0.0.0.0"):
            _issued.add(port)
            return port
    raise PeerError(f"no free {kind} port found")


def free_port_block(count: int, kind: str = "udp", align: int = 2) -> int:
    """First port of ``count`` consecutive free ports, the first one a multiple of ``align``."""
    for _ in range(500):
        base = free_port(kind)
        base -= base % align
        ports = range(base, base + count)
        if not any(lo <= base and base + count <= hi for lo, hi in _port_ranges()):
            continue  # the block would run out of its range (into a gateway's RTP span or another worker's slice)
        if any(p in _issued and p != base + 0 for p in ports[1:]):
            continue
        if all(_can_bind(p, kind) and _can_bind(p, kind, "0.0.0.0") for p in ports):
            _issued.update(ports)
            return base
    raise PeerError(f"no block of {count} free {kind} ports found")


def free_port_pair() -> int:
    """An even UDP port P with P+1 also free (RTP + RTCP). Returns P."""
    return free_port_block(2, "udp", align=2)


# ------------------------------------------------------------------------------------------ process

def which(program: str) -> str | None:
    return shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)), None)


class _Process:
    """A child process in its own process group, killed by PID on stop()."""

    proc: subprocess.Popen[bytes] | None = None
    name = "peer"

    def _spawn(self, argv: Sequence[str], log_path: Path, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit and return the exit code; raises TimeoutError (process left running)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} (pid {self.proc.pid}) still running after {timeout}s;"
                               f" log tail:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except (OSError, AttributeError):
            return ""

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 3.0) -> int | None:
        """Terminate (SIGTERM to the child's own process group, then SIGKILL). Idempotent."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(5)
        else:
            self._signal_group(signal.SIGKILL)  # stray grandchildren of an exited leader, if any
        if getattr(self, "_log", None) and not self._log.closed:
            self._log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------------------------- SIPp

@dataclass(frozen=True)
class SipMessage:
    direction: str  # "sent" or "received"
    text: str
    time: float = 0.0  # seconds since the epoch, from SIPp's log line

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str | None:
        return self.first_line.split(" ", 1)[0] if self.is_request else None

    @property
    def status(self) -> int | None:
        return None if self.is_request else int(self.first_line.split()[1])

    @property
    def cseq_method(self) -> str | None:
        h = self.header("CSeq")
        return h.split()[-1] if h else None

    def header(self, name: str) -> str | None:
        """First value of a header (full name, case-insensitive)."""
        hs = self.headers(name)
        return hs[0] if hs else None

    def headers(self, name: str) -> list[str]:
        head = self.text.split("\n\n", 1)[0]
        out = []
        for line in head.split("\n")[1:]:
            k, sep, v = line.partition(":")
            if sep and k.strip().lower() == name.lower():
                out.append(v.strip())
        return out

    @property
    def body(self) -> str:
        return self.text.split("\n\n", 1)[1] if "\n\n" in self.text else ""


_MSG_SPLIT = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)[^\n]*\n", re.MULTILINE)
_MSG_HEAD = re.compile(r"^(?:UDP|TCP|TLS|SCTP|WS|WSS)? ?message (sent|received) [\[(]\d+\]? ?bytes\)? ?:?\n\n", re.MULTILINE)


def parse_sipp_messages(log: str) -> list[SipMessage]:
    """Parse SIPp's ``-trace_msg`` file into messages (retransmissions included, in order)."""
    import datetime as _dt
    out: list[SipMessage] = []
    parts = _MSG_SPLIT.split(log.replace("\r\n", "\n"))
    for stamp, chunk in zip(parts[1::2], parts[2::2]):
        m = _MSG_HEAD.search(chunk)
        if not m:
            continue
        text = chunk[m.end():].strip("\n")
        try:
            ts = _dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            ts = 0.0
        if text:
            out.append(SipMessage(m.group(1), text + "\n", ts))
    return out


class Sipp(_Process):
    """One SIPp process running one scenario (UAS: no remote; UAC: ``remote="127.0.0.1:PORT"``).

    Ports (SIP ``-p``, media ``-mp`` (SIPp binds mp and mp+2), control ``-cp``) are chosen free unless given.
    ``keys`` become ``-key k v``. The message log is ``messages()``; parsed: ``sip_messages()``,
    ``received_requests()``, ``sent_responses()`` etc."""

    name = "sipp"
    _seq = itertools.count(1)

    def __init__(self, scenario: str | Path, workdir: Path, *, remote: str | None = None,
                 port: int | None = None, media_port: int | None = None, control_port: int | None = None,
                 calls: int = 1, keys: dict[str, object] | None = None, rtp_echo: bool = False,
                 service: str | None = None, duration_ms: int | None = None, transport: str = "u1",
                 auth: tuple[str, str] | None = None, extra: Sequence[str] = (), binary: str = "sipp"):
        exe = which(binary)
        if exe is None:
            raise PeerError("sipp is not installed (apt package sip-tester)")
        self.scenario = Path(scenario) if not str(scenario).startswith("builtin:") else scenario
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        n = next(self._seq)
        stem = (str(scenario).split(":", 1)[1] if str(scenario).startswith("builtin:")
                else Path(scenario).stem)
        self.tag = f"{stem}_{n}"
        self.port = port or free_port("both" if transport.startswith("t") else "udp")
        self.media_port = media_port or free_port_block(4, "udp", align=2)
        self.control_port = control_port or free_port("udp")
        self.message_file = self.workdir / f"{self.tag}.msg.log"
        self.error_file = self.workdir / f"{self.tag}.err.log"
        self.remote = remote
        argv = [exe]
        if str(scenario).startswith("builtin:"):
            argv += ["-sn", str(scenario).split(":", 1)[1]]
        else:
            if not Path(scenario).is_file():
                raise PeerError(f"no scenario file {scenario}")
            argv += ["-sf", str(scenario)]
        if remote:
            argv.append(remote)
        argv += ["-i", LOOPBACK, "-p", str(self.port), "-mi", LOOPBACK, "-mp", str(self.media_port),
                 "-cp", str(self.control_port), "-m", str(calls), "-t", transport, "-nostdin",
                 "-trace_msg", "-message_file", str(self.message_file),
                 "-trace_err", "-error_file", str(self.error_file)]
        if service:
            argv += ["-s", service]
        if duration_ms is not None:
            argv += ["-d", str(duration_ms)]
        if auth:
            argv += ["-au", auth[0], "-ap", auth[1]]
        if rtp_echo:
            argv.append("-rtp_echo")
        for k, v in (keys or {}).items():
            argv += ["-key", str(k), str(v)]
        argv += list(extra)
        self._spawn(argv, self.workdir / f"{self.tag}.out.log", cwd=self.workdir)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def uri(self, user: str = "service") -> str:
        return f"sip:{user}@{LOOPBACK}:{self.port}"

    def messages(self) -> str:
        """The raw ``-trace_msg`` log."""
        try:
            return self.message_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def errors(self) -> str:
        try:
            return self.error_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sip_messages(self) -> list[SipMessage]:
        return parse_sipp_messages(self.messages())

    def received(self) -> list[SipMessage]:
        return [m for m in self.sip_messages() if m.direction == "received"]

    def sent(self) -> list[SipMessage]:
        return [m for m in self.sip_messages() if m.direction == "sent"]

    def received_requests(self) -> list[str]:
        """Methods of requests SIPp received, in order, retransmissions included."""
        return [m.method for m in self.received() if m.is_request]  # type: ignore[misc]

    def received_responses(self) -> list[int]:
        return [m.status for m in self.received() if not m.is_request]  # type: ignore[misc]

    def sent_requests(self) -> list[str]:
        return [m.method for m in self.sent() if m.is_request]  # type: ignore[misc]

    def sent_responses(self) -> list[int]:
        """Status codes SIPp sent, in order, retransmissions included."""
        return [m.status for m in self.sent() if not m.is_request]  # type: ignore[misc]

    def flow(self) -> list[str]:
        """Compact trace like ``["<INVITE", ">180", ">200", "<ACK"]`` (< received, > sent)."""
        return [("<" if m.direction == "received" else ">") + (m.method or str(m.status))
                for m in self.sip_messages()]

    def digest_checks(self, header: str, password: str) -> list[tuple[str, str, bool]]:
        """For each received request carrying ``header`` (Authorization or Proxy-Authorization):
        (method, username, digest correct for ``password``). SIPp's <verifyauth> cannot check
        Proxy-Authorization, this can."""
        out = []
        for m in self.received():
            if m.is_request and m.header(header):
                v = m.header(header) or ""
                out.append((m.method or "", parse_digest(v).get("username", ""),
                            digest_ok(v, m.method or "", password, m.body)))
        return out

    def describe(self) -> str:
        return (f"sipp {self.tag} rc={self.proc.returncode if self.proc else None}\n"
                f"argv: {' '.join(self.argv)}\nflow: {_cap(self.flow())}\n"
                f"errors:\n{self.errors()[-3000:]}\noutput tail:\n{self.log_tail(1500)}")


def _cap(items: list[str], n: int = 40) -> str:
    return str(items) if len(items) <= n else f"{items[:n]} ... ({len(items)} messages)"


def render_scenario(template: str | Path, dest_dir: Path, **subs: object) -> Path:
    """Copy a scenario replacing ``@NAME@`` placeholders (SIPp does not expand keywords inside
    ``<exec rtp_stream=...>``/``play_pcap_audio``), e.g. ``render_scenario(p, tmp, TONE_WAV=wav)``."""
    template = Path(template)
    if not template.is_absolute():
        template = SCENARIOS / template
    text = template.read_text()
    for k, v in subs.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{template.name}: placeholders not filled: {sorted(set(left))}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / template.name
    out.write_text(text)
    return out


def scenario(name: str) -> Path:
    """Path of a committed scenario (``uas_answer`` or ``uas_answer.xml`` or ``selftest/...``)."""
    p = SCENARIOS / (name if name.endswith(".xml") else name + ".xml")
    if not p.is_file():
        raise FileNotFoundError(p)
    return p


# ------------------------------------------------------------------------------------ digest check

def parse_digest(header_value: str) -> dict[str, str]:
    """``Digest username="a", realm="r", ...`` -> dict (keys lower-case)."""
    v = header_value.strip()
    if v[:6].lower() == "digest":
        v = v[6:]
    return {k.lower(): (q if q else t) for k, q, t in
            re.findall(r'([A-Za-z0-9_-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', v)}


def digest_ok(header_value: str, method: str, password: str, body: str = "") -> bool:
    """Recompute an RFC 2617/3261 MD5 digest ``response`` (qop auth/auth-int or none)."""
    d = parse_digest(header_value)
    try:
        alg = d.get("algorithm", "MD5").upper()
        if alg not in ("MD5", "MD5-SESS"):
            return False
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()
        ha1 = md5(f"{d['username']}:{d['realm']}:{password}")
        if alg == "MD5-SESS":
            ha1 = md5(f"{ha1}:{d['nonce']}:{d['cnonce']}")
        qop = d.get("qop")
        ha2 = md5(f"{method}:{d['uri']}" + (f":{md5(body)}" if qop == "auth-int" else ""))
        if qop:
            expect = md5(f"{ha1}:{d['nonce']}:{d['nc']}:{d['cnonce']}:{qop}:{ha2}")
        else:
            expect = md5(f"{ha1}:{d['nonce']}:{ha2}")
        return expect == d["response"].lower()
    except KeyError:
        return False


# ------------------------------------------------------------------------------------------ baresip

BARESIP_CONFIG = """\
# generated by tests/interop/peers.py (baresip 1.0.0)
poll_method\t\tepoll
sip_listen\t\t{ip}:{sip_port}
net_interface\t\t{ip}
call_local_timeout\t120
call_max_calls\t\t4
audio_source\t\taufile,{wav}
audio_player\t\taubridge,null_{name}
audio_alert\t\taubridge,null_{name}
ausrc_srate\t\t48000
auplay_srate\t\t48000
ausrc_channels\t\t1
auplay_channels\t\t1
audio_level\t\tno
ausrc_format\t\ts16
auplay_format\t\ts16
auenc_format\t\ts16
audec_format\t\ts16
audio_buffer\t\t20-160
rtp_ports\t\t{rtp_lo}-{rtp_hi}
rtcp_mux\t\tno
jitter_buffer_delay\t5-10
rtp_stats\t\tno
module_path\t\t{module_path}
module\t\t\tg711.so
module\t\t\tg722.so
module\t\t\topus.so
module\t\t\taufile.so
module\t\t\taubridge.so
module\t\t\tsndfile.so
module\t\t\tcons.so
module_tmp\t\tuuid.so
module_tmp\t\taccount.so
module_app\t\tcontact.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
snd_path\t\t{rec}
cons_listen\t\t{ip}:{cons_port}
ctrl_tcp_listen\t\t{ip}:{ctrl_port}
"""


class BaresipCtrl:
    """Netstring-framed JSON client for baresip's ``ctrl_tcp``. Every event seen is kept in ``events``."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        self.events: list[dict] = []
        self._consumed = 0  # events[:_consumed] were already returned by wait_event()
        self._tok = itertools.count(1)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _read(self, timeout: float) -> dict | None:
        self.sock.settimeout(max(0.01, timeout))
        while True:
            if b":" in self.buf:
                n, rest = self.buf.split(b":", 1)
                ln = int(n)
                if len(rest) >= ln + 1:
                    msg, self.buf = rest[:ln], rest[ln + 1:]
                    return json.loads(msg)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise EOFError("baresip closed the ctrl_tcp connection")
            self.buf += chunk

    def cmd(self, command: str, params: str | None = None, timeout: float = 5.0) -> dict:
        tok = f"t{next(self._tok)}"
        d: dict[str, str] = {"command": command, "token": tok}
        if params is not None:
            d["params"] = params
        b = json.dumps(d).encode()
        self.sock.sendall(b"%d:%s," % (len(b), b))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self._read(end - time.monotonic())
            if m is None:
                break
            if m.get("event"):
                self.events.append(m)
            elif m.get("response") and m.get("token") == tok:
                return m
        raise TimeoutError(f"baresip ctrl: no response to {command!r}")

    def poll(self, seconds: float = 0.0) -> list[dict]:
        """Read whatever arrives within ``seconds``; returns all events so far."""
        end = time.monotonic() + seconds
        while True:
            m = self._read(max(0.01, end - time.monotonic()))
            if m is not None and m.get("event"):
                self.events.append(m)
            if m is None and time.monotonic() >= end:
                return self.events

    def wait_event(self, etype: str, timeout: float = 10.0) -> dict:
        """Next not yet returned event of type ``etype`` (events before it stay in ``events``)."""
        end = time.monotonic() + timeout
        while True:
            for i in range(self._consumed, len(self.events)):
                if self.events[i].get("type") == etype:
                    self._consumed = i + 1
                    return self.events[i]
            if time.monotonic() >= end:
                raise TimeoutError(f"baresip: no {etype} event in {timeout}s; got "
                                   f"{[e.get('type') for e in self.events]}")
            m = self._read(end - time.monotonic())
            if m is not None and m.get("event"):
                self.events.append(m)

    def event_types(self) -> list[str]:
        return [e.get("type", "") for e in self.events]


class Baresip(_Process):
    """baresip 1.0.0 with a generated config dir under ``workdir/name``.

    ``account`` is ``None`` (direct: ``<sip:NAME@127.0.0.1:SIP_PORT>;regint=0;answermode=auto``) or a
    registering account: ``registrar="127.0.0.1:PORT"`` with ``password`` (and optional ``auth_user``)."""

    name = "baresip"

    def __init__(self, workdir: Path, name: str = "bob", *, wav: Path | None = None,
                 audio_codecs: str = "pcmu,pcma", answermode: str = "auto",
                 registrar: str | None = None, password: str | None = None, auth_user: str | None = None,
                 regint: int = 300, extra_account_params: str = "", start: bool = True):
        exe = which("baresip")
        if exe is None:
            raise PeerError("baresip is not installed (apt package baresip-core)")
        self.exe = exe
        self.user = name
        self.dir = Path(workdir) / f"baresip_{name}"
        self.rec_dir = self.dir / "rec"
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        # baresip listens for SIP/TLS on sip_port + 1: both ports must be free.
        self.sip_port = free_port_block(2, "both", align=1)
        self.ctrl_port = free_port("tcp")
        self.cons_port = free_port("both")  # cons listens on UDP and TCP
        self.rtp_lo = free_port_block(20, "udp", align=2)
        if wav is None:
            wav = self.dir / "tone440_48k.wav"
            make_tone_wav(wav, 440.0, 48000, 10.0)
        self.wav = Path(wav)
        module_path = "/usr/lib/baresip/modules"
        (self.dir / "config").write_text(BARESIP_CONFIG.format(
            ip=LOOPBACK, sip_port=self.sip_port, wav=self.wav, name=name, rtp_lo=self.rtp_lo,
            rtp_hi=self.rtp_lo + 19, module_path=module_path, rec=self.rec_dir,
            cons_port=self.cons_port, ctrl_port=self.ctrl_port))
        if registrar:
            aor = f"<sip:{name}@{registrar}>"
            params = [f"auth_pass={password}" if password else "", f"regint={regint}"]
            if auth_user:
                params.append(f"auth_user={auth_user}")
        else:
            aor = f"<sip:{name}@{LOOPBACK}:{self.sip_port}>"
            params = ["regint=0"]
        params += [f"answermode={answermode}", f"audio_codecs={audio_codecs}"]
        if extra_account_params:
            params.append(extra_account_params.lstrip(";"))
        self.account_line = aor + ";" + ";".join(p for p in params if p)
        (self.dir / "accounts").write_text(self.account_line + "\n")
        (self.dir / "contacts").write_text("")
        self.ctrl: BaresipCtrl | None = None
        if start:
            self.start()

    def start(self, timeout: float = 10.0) -> None:
        self._spawn([self.exe, "-f", str(self.dir)], self.dir / "baresip.log", cwd=self.dir)
        try:
            self.ctrl = BaresipCtrl(self.ctrl_port, timeout=timeout)
        except OSError:
            self.stop()
            raise PeerError(f"baresip did not open ctrl_tcp on {self.ctrl_port}:\n{self.log_tail()}")

    @property
    def uri(self) -> str:
        """Where to call this baresip directly."""
        return f"sip:{self.user}@{LOOPBACK}:{self.sip_port}"

    def cmd(self, command: str, params: str | None = None, timeout: float = 5.0) -> dict:
        assert self.ctrl is not None
        return self.ctrl.cmd(command, params, timeout)

    def wait_event(self, etype: str, timeout: float = 10.0) -> dict:
        assert self.ctrl is not None
        return self.ctrl.wait_event(etype, timeout)

    def events(self, poll: float = 0.0) -> list[dict]:
        assert self.ctrl is not None
        return self.ctrl.poll(poll)

    def dial(self, uri: str) -> dict:
        return self.cmd("dial", uri)

    def hangup(self) -> dict:
        return self.cmd("hangup")

    def send_dtmf(self, digits: str, press: float = 0.2, gap: float = 0.3) -> None:
        """RFC 4733 digits via the ``cons`` UDP socket: the key, then KEYCODE_REL (0x04) to end the event."""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for d in digits:
                u.sendto(d.encode(), (LOOPBACK, self.cons_port))
                time.sleep(press)
                u.sendto(b"\x04", (LOOPBACK, self.cons_port))
                time.sleep(gap)
        finally:
            u.close()

    def registered(self) -> bool:
        """True when ``reginfo`` shows the account registered (status OK)."""
        data = str(self.cmd("reginfo").get("data", ""))
        return re.search(r"\bOK\b", re.sub(r"\x1b\[[0-9;]*m", "", data)) is not None

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Wait until the registering account got its 200 OK (raises TimeoutError with the log tail)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.registered():
                return
            time.sleep(0.1)
        raise TimeoutError(f"baresip {self.user} not registered after {timeout}s:\n{self.log_tail(1500)}")

    def recorded_wav(self, kind: str = "dec") -> Path | None:
        """Newest ``rec/dump-*-dec.wav`` (what baresip received) or ``-enc.wav`` (what it sent)."""
        files = sorted(self.rec_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: (p.stat().st_mtime, p.name))
        return files[-1] if files else None

    def log_text(self) -> str:
        return self.log_tail(10**9)

    def dtmf_received(self) -> str:
        """Digits received, from CALL_DTMF_START events, else from 'received DTMF' log lines.

        Note: baresip's log line also covers SIP INFO (application/dtmf-relay); events come from both."""
        evs = [e for e in (self.ctrl.poll(0.05) if self.ctrl else []) if e.get("type") == "CALL_DTMF_START"]
        if evs:
            return "".join(str(e.get("param", "")) for e in evs)
        return "".join(re.findall(r"received DTMF: '(.)'", self.log_text()))

    def stop(self, grace: float = 3.0) -> int | None:
        if self.ctrl is not None and self.running():
            try:
                self.ctrl.cmd("quit", timeout=1.0)
            except (OSError, TimeoutError, EOFError):
                pass
            try:
                assert self.proc is not None
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.ctrl is not None:
            self.ctrl.close()
        return super().stop(grace)


# ----------------------------------------------------------------------------------------- Kamailio

KAMAILIO_CFG = r"""#!KAMAILIO
# generated by tests/interop/peers.py: registrar + record-routing proxy with digest auth, no DB
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=2
auto_aliases=no
listen=udp:{ip}:{port}
listen=tcp:{ip}:{port}
alias="{ip}:{port}"
alias="localhost:{port}"
mpath="{mpath}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "auth.so"
loadmodule "htable.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unix:{ctl}")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("rr", "enable_full_lr", 1)
modparam("htable", "htable", "users=>size=4;")

event_route[htable:mod-init] {{
{users}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (!sanity_check("17895", "7")) {{ xlog("L_WARN", "malformed $rm from $si:$sp\n"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (!is_method("ACK")) {{ if (t_precheck_trans()) {{ t_check_trans(); exit; }} t_check_trans(); }}
    if (has_totag()) {{
        if (loose_route()) {{ if (!t_relay()) {{ sl_reply_error(); }} exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("OPTIONS") && uri==myself && $rU==$null) {{ sl_send_reply("200", "Keepalive"); exit; }}
    remove_hf("Route");
    if (is_method("INVITE|SUBSCRIBE")) {{ record_route(); }}
    if (is_method("REGISTER|INVITE|MESSAGE|SUBSCRIBE")) {{
        if (!is_present_hf("Authorization") && !is_present_hf("Proxy-Authorization")) {{
            auth_challenge("$fd", "0"); exit;
        }}
        if ($sht(users=>$au) == $null) {{
            xlog("L_INFO", "unknown auth user '$au' for $rm from $fu\n");
            sl_send_reply("403", "Forbidden"); exit;
        }}
        if (!pv_auth_check("$fd", "$sht(users=>$au)", "0", "1")) {{
            xlog("L_INFO", "auth challenge for $rm from $fu (au=$au rc=$rc)\n");
            auth_challenge("$fd", "0"); exit;
        }}
        consume_credentials();
    }}
    if (is_method("REGISTER")) {{
        if (!save("location")) {{ sl_reply_error(); }}
        xlog("L_INFO", "REGISTER ok: $tu -> $ct expires=$hdr(Expires)\n"); exit;
    }}
    $var(rc) = lookup("location");
    if ($var(rc) < 0) {{
        xlog("L_INFO", "$rm to $ru: user not registered (rc=$var(rc))\n");
        switch ($var(rc)) {{
            case -1:
            case -3:
                sl_send_reply("404", "Not Found"); exit;
            case -2:
                sl_send_reply("405", "Method Not Allowed"); exit;
        }}
    }}
    xlog("L_INFO", "relaying $rm $fu -> $ru\n");
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""

DEFAULT_KAMAILIO_USERS = {"alice": "alicepw", "bob": "bobpw", "gateway": "gwpw"}


def _kamailio_mpath() -> str:
    import glob
    for cand in sorted(glob.glob("/usr/lib/*/kamailio/modules/")) + ["/usr/lib/kamailio/modules/",
                                                                       "/usr/lib64/kamailio/modules/"]:
        if os.path.isfile(os.path.join(cand, "tm.so")):
            return cand
    raise PeerError("kamailio modules directory not found")


class Kamailio(_Process):
    """Kamailio as registrar (digest, htable users) + record-routing proxy on UDP+TCP ``port``.

    The domain is ``127.0.0.1:PORT``: register ``sip:USER@127.0.0.1:PORT``. The ctl socket lives in a short
    temp dir (unix socket paths must stay under 108 bytes)."""

    name = "kamailio"

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, port: int | None = None,
                 start: bool = True):
        exe = which("kamailio")
        if exe is None:
            raise PeerError("kamailio is not installed (apt package kamailio)")
        self.exe = exe
        self.users = dict(DEFAULT_KAMAILIO_USERS if users is None else users)
        self.dir = Path(workdir) / "kamailio"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port("both")
        self.rundir = Path(tempfile.mkdtemp(prefix="kam", dir="/tmp"))
        self.ctl = self.rundir / "ctl"
        for u, p in self.users.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", u) or '"' in p or "\\" in p:
                raise ValueError(f"unsupported kamailio user/password {u!r}")
        users_cfg = "\n".join(f'    $sht(users=>{u}) = "{p}";' for u, p in self.users.items())
        self.cfg = self.dir / "kamailio.cfg"
        self.cfg.write_text(KAMAILIO_CFG.format(ip=LOOPBACK, port=self.port, mpath=_kamailio_mpath(),
                                                ctl=self.ctl, users=users_cfg))
        if start:
            self.start()

    @property
    def domain(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def uri(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    def check_config(self) -> str:
        r = subprocess.run([self.exe, "-c", "-f", str(self.cfg)], capture_output=True, text=True, timeout=30, check=False)
        if r.returncode != 0:
            raise PeerError(f"kamailio -c failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout + r.stderr

    def start(self, timeout: float = 10.0) -> None:
        self._spawn([self.exe, "-DD", "-E", "-f", str(self.cfg), "-m", "64", "-M", "8",
                     "-Y", str(self.rundir), "-P", str(self.rundir / "kamailio.pid")],
                    self.dir / "kamailio.log", cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise PeerError(f"kamailio exited rc={self.proc.returncode}:\n{self.log_tail()}")
            if self.ctl.exists() and not _can_bind(self.port, "udp"):
                try:
                    self.rpc("core.version")
                    return
                except PeerError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise PeerError(f"kamailio did not come up in {timeout}s:\n{self.log_tail()}")

    def rpc(self, *args: str, timeout: float = 10.0) -> str:
        kamcmd = which("kamcmd")
        if kamcmd is None:
            raise PeerError("kamcmd not found")
        r = subprocess.run([kamcmd, "-s", f"unix:{self.ctl}", *args], capture_output=True, text=True,
                           timeout=timeout, check=False)
        if r.returncode != 0 or r.stdout.startswith("error:"):
            raise PeerError(f"kamcmd {' '.join(args)} rc={r.returncode}: {r.stderr or r.stdout}")
        return r.stdout

    def registered_contacts(self, user: str) -> list[str]:
        """Contact URIs registered for USER (``kamcmd ul.lookup location USER``; AoRs are stored without the
        domain since usrloc's use_domain is off)."""
        try:
            out = self.rpc("ul.lookup", "location", user)
        except PeerError as e:
            if "not found" in str(e).lower():
                return []
            raise
        return re.findall(r"Address:\s*(\S+)", out)

    def log_text(self) -> str:
        return self.log_tail(10**9)

    def stop(self, grace: float = 3.0) -> int | None:
        rc = super().stop(grace)
        shutil.rmtree(self.rundir, ignore_errors=True)
        return rc


def phone_route(bob: Baresip, **trunk: object) -> dict[str, list[dict[str, object]]]:
    """webgate config tables sending destination ``bob`` (a public ``[[route]]``, no token needed)
    over a trunk ``phone`` to this baresip; ``trunk``: the trunk's other keys (codecs, dtmf...)."""
    return {
        "trunk": [{"name": "phone", "target": f"sip:{LOOPBACK}:{bob.sip_port}", **trunk}],
        "route": [{"pattern": "bob", "trunk": "phone", "public": True}],
    }


# ------------------------------------------------------------------------------------------- audio

def make_tone_wav(path: Path | str, freq: float = 1000.0, rate: int = 8000, seconds: float = 3.0,
                  amplitude: float = 0.5) -> Path:
    """A mono 16-bit PCM sine WAV (stdlib ``wave`` + numpy)."""
    path = Path(path)
    t = np.arange(int(rate * seconds)) / rate
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def ulaw_encode(pcm16: np.ndarray) -> bytes:
    """G.711 mu-law encode int16 samples."""
    x = pcm16.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    exp = np.clip(exp, 0, 7)
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exp = (u >> 4) & 0x07
    mant = u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def alaw_decode(data: bytes) -> np.ndarray:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exp = (a >> 4) & 0x07
    mant = a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(sign != 0, mag, -mag).astype(np.int16)


def make_ulaw_wav(path: Path | str, freq: float = 1000.0, seconds: float = 3.0, amplitude: float = 0.5) -> Path:
    """An 8 kHz mono G.711 mu-law WAV (format tag 7), what SIPp's ``rtp_stream=FILE,LOOPS,0`` plays."""
    import struct
    path = Path(path)
    rate = 8000
    t = np.arange(int(rate * seconds)) / rate
    data = ulaw_encode((amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16))
    fmt = struct.pack("<HHIIHHH", 7, 1, rate, rate, 1, 8, 0)
    fact = struct.pack("<I", len(data))
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b""))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Samples as float in [-1, 1] (first channel) and the rate. PCM 8/16/32-bit, mu-law, A-law."""
    import struct
    raw = Path(path).read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        chunk = raw[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", chunk[:16])
        elif cid == b"data":
            data = chunk
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise ValueError(f"{path}: no fmt/data chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag == 7:
        x = ulaw_decode(data).astype(np.float64) / 32768
    elif tag == 6:
        x = alaw_decode(data).astype(np.float64) / 32768
    elif tag in (1, 0xFFFE) and bits == 16:
        x = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64) / 32768
    elif tag in (1, 0xFFFE) and bits == 32:
        x = np.frombuffer(data[: len(data) // 4 * 4], dtype="<i4").astype(np.float64) / 2**31
    elif tag in (1, 0xFFFE) and bits == 8:
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128) / 128
    elif tag == 3 and bits == 32:
        x = np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").astype(np.float64)
    else:
        raise ValueError(f"{path}: unsupported WAV format tag {tag} / {bits} bits")
    return x[::channels] if channels > 1 else x, rate


def dominant_frequency(path_or_samples: Path | str | np.ndarray, rate: int | None = None) -> float:
    """Frequency (Hz) of the strongest FFT bin (Hann window; DC removed)."""
    if isinstance(path_or_samples, np.ndarray):
        x, r = path_or_samples.astype(np.float64), rate
        if r is None:
            raise ValueError("rate is required with raw samples")
    else:
        x, r = read_wav(path_or_samples)
    if len(x) < 16:
        return 0.0
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec[1:])) + 1
    # parabolic interpolation for sub-bin accuracy
    if 1 <= k < len(spec) - 1:
        a, b, c = spec[k - 1], spec[k], spec[k + 1]
        den = a - 2 * b + c
        k = k + (0.5 * (a - c) / den if den else 0.0)
    return float(k * r / len(x))


def rms_dbfs(path_or_samples: Path | str | np.ndarray) -> float:
    """RMS level in dBFS (full-scale sine = -3 dBFS); -inf-ish (-200) for silence."""
    x = path_or_samples if isinstance(path_or_samples, np.ndarray) else read_wav(path_or_samples)[0]
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return -200.0
    if np.issubdtype(np.asarray(path_or_samples).dtype, np.integer):
        x = x / 32768
    rms = float(np.sqrt(np.mean(x * x)))
    return 20 * np.log10(rms) if rms > 1e-10 else -200.0


# ------------------------------------------------------------------------------------- RTP receiver

class RtpSink:
    """A UDP socket on 127.0.0.1 collecting RTP packets (for checking what a peer streams).

    ``payload_types()``, ``audio(pt)`` decodes G.711 (PT 0/8) into int16 samples, ``events()`` gives
    RFC 4733 digits (PT ``event_pt``)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port_pair()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, self.port))
        self.packets: list[tuple[bytes, tuple[str, int]]] = []

    def collect(self, seconds: float) -> int:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                self.packets.append(self.sock.recvfrom(4096))
            except TimeoutError:
                break
        return len(self.packets)

    @staticmethod
    def _split(pkt: bytes) -> tuple[int, bytes]:
        if len(pkt) < 12 or pkt[0] >> 6 != 2:
            return -1, b""
        cc = pkt[0] & 0x0F
        off = 12 + 4 * cc
        if pkt[0] & 0x10 and len(pkt) >= off + 4:
            off += 4 + 4 * int.from_bytes(pkt[off + 2:off + 4], "big")
        end = len(pkt) - (pkt[-1] if pkt[0] & 0x20 else 0)
        return pkt[1] & 0x7F, pkt[off:end]

    def payload_types(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for p, _ in self.packets:
            pt, _ = self._split(p)
            out[pt] = out.get(pt, 0) + 1
        return out

    def audio(self, pt: int = 0) -> np.ndarray:
        data = b"".join(pl for pt_, pl in (self._split(p) for p, _ in self.packets) if pt_ == pt)
        return ulaw_decode(data) if pt == 0 else alaw_decode(data)

    def events(self, event_pt: int = 101) -> str:
        digits, last = [], None
        for p, _ in self.packets:
            pt, pl = self._split(p)
            if pt == event_pt and len(pl) >= 4:
                ev = pl[0]
                ts = p[4:8]
                if last != ts:
                    digits.append("0123456789*#ABCD"[ev] if ev < 16 else "?")
                    last = ts
        return "".join(digits)

    def close(self) -> None:
        self.sock.close()


def sipp_available() -> bool:
    return which("sipp") is not None


def iter_flow(flow: Iterable[str], item: str) -> int:
    return sum(1 for f in flow if f == item)
