"""The harness's ports: outside the range outgoing connections take their source ports
from, and never the same one twice, so that a service bound later still finds it free."""

from __future__ import annotations

import socket
from pathlib import Path

from testbed.net import free_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(300)]
    low = int(RANGE.read_text().split()[0]) if RANGE.exists() else 32768
    assert all(10_000 <= port < low for port in ports)
    assert len(set(ports)) == len(ports)


def test_a_port_handed_out_can_be_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
