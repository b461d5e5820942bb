"""A network namespace as "the outside world" for edge tests: made by the test, deleted after it.

``OutsideWorld`` creates a namespace joined to this host by a veth pair, a /30 in 198.18.0.0/15
(RFC 2544 benchmarking space: never routed): ``host_ip`` on this side, ``inside_ip`` in the
namespace. ``udp_socket(port)`` opens a UDP socket *inside* the namespace and hands it to this
process (SCM_RIGHTS through ``ip netns exec``): packets sent on it leave from ``inside_ip``, so the
gateway sees a real non-loopback source, with no spoofing and no second process to drive.

Needs root (CAP_NET_ADMIN) and ``ip`` (iproute2). Names carry this process's PID, so two test
runs on one machine do not collide.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from types import TracebackType

from tests.require import which

_NET = ipaddress.ip_network("198.18.0.0/15")

_OPEN_SOCKET = r"""
import socket, sys
unix = socket.socket(fileno=int(sys.argv[1]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[2], int(sys.argv[3])))
socket.send_fds(unix, [b"ok"], [s.fileno()])
"""


class NetnsUnavailable(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


class OutsideWorld:
    def __init__(self) -> None:
        if which("ip") is None:
            raise NetnsUnavailable("ip (iproute2) is not installed")
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        pid = os.getpid()
        self.name = f"wgedge{pid}"
        self.veth_host = f"wge{pid}h"
        self.veth_inside = f"wge{pid}n"
        self.host_ip, self.inside_ip = self._free_pair(pid)
        self._made = False

    @staticmethod
    def _free_pair(seed: int) -> tuple[str, str]:
        used = _ip("-4", "-o", "addr", "show", check=False).stdout
        count = _NET.num_addresses // 4
        for i in range(count):
            base = _NET.network_address + 4 * ((seed + i) % count)
            host, inside = str(base + 1), str(base + 2)
            if f" {host}/" not in used and f" {inside}/" not in used:
                return host, inside
        raise NetnsUnavailable("no free /30 in 198.18.0.0/15")

    def __enter__(self) -> OutsideWorld:
        self._made = True
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_inside)
            _ip("link", "set", self.veth_inside, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.veth_host)
            _ip("link", "set", self.veth_host, "up")
            _ip("-n", self.name, "addr", "add", f"{self.inside_ip}/30", "dev", self.veth_inside)
            _ip("-n", self.name, "link", "set", self.veth_inside, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            self.close()
            raise NetnsUnavailable(f"{' '.join(e.cmd)}: {e.stderr.strip()}") from None
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if not self._made:
            return
        self._made = False
        _ip("link", "del", self.veth_host, check=False)  # takes its peer with it
        _ip("netns", "del", self.name, check=False)

    def exists(self) -> bool:
        return self.name in _ip("netns", "list", check=False).stdout.split()

    def udp_socket(self, port: int = 0) -> socket.socket:
        """A UDP socket bound to ``inside_ip:port`` inside the namespace, usable from this process."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            r = subprocess.run(
                ["ip", "netns", "exec", self.name, sys.executable, "-c", _OPEN_SOCKET,
                 str(theirs.fileno()), self.inside_ip, str(port)],
                pass_fds=(theirs.fileno(),), capture_output=True, text=True, timeout=20, check=False,
            )
            if r.returncode != 0:
                raise NetnsUnavailable(f"opening a socket in {self.name} failed: {r.stderr.strip()}")
            theirs.close()
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 16, 1)
        finally:
            ours.close()
            theirs.close()
        return socket.socket(fileno=fds[0])
