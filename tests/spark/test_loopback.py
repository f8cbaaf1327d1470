"""Local Spark sessions listen on loopback only (the driver would otherwise bind to the
machine's network address), read from the kernel's own socket tables."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from ._support import require_toolchain

require_toolchain()

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(),
                                reason="needs Linux /proc/net/tcp")

LISTEN = "0A"


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # the process ended meanwhile
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_ip)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) byte order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every LISTEN socket owned by ``pids``."""
    inodes = _socket_inodes(pids)
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                ip, port = local.split(":")
                out.append((str(_address(ip)), int(port, 16)))
    return out


def test_local_session_listens_on_loopback_only(spark):
    assert spark.conf.get("spark.driver.host") == "127.0.0.1"
    assert spark.conf.get("spark.driver.bindAddress") == "127.0.0.1"
    spark.range(4).groupBy().count().collect()  # executors and block manager are up
    gateway = spark.sparkContext._gateway.proc  # the JVM pyspark started (spark-submit)
    pids = _descendants(os.getpid()) | _descendants(gateway.pid)
    sockets = listening(pids)
    assert sockets, "found no listening socket of the Spark driver at all"
    exposed = [(ip, port) for ip, port in sockets if not ipaddress.ip_address(ip).is_loopback]
    assert exposed == [], f"listening beyond loopback: {exposed}"
