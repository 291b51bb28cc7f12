"""What a local cluster's nodes say about themselves, and ports to start them on.

`parse_nodes` reads CLUSTER NODES into `NodeInfo`s; `covers` says whether a node's slot ranges
hold a slot; `cluster_ports` finds loopback ports free for a node and its cluster bus.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from labcache.embedded import free_port


@dataclass(frozen=True)
class NodeInfo:
    """One node as the cluster sees it."""

    port: int
    node_id: str
    role: str  # "primary" or "replica"
    slots: tuple[tuple[int, int], ...]
    primary_of: str | None  # a replica's primary id
    alive: bool


def covers(ranges: tuple[tuple[int, int], ...], slot: int) -> bool:
    """Whether one of the (first, last) slot ranges holds `slot`."""
    return any(first <= slot <= last for first, last in ranges)


def parse_nodes(text: str, ours: set[int]) -> list[NodeInfo]:
    """CLUSTER NODES as NodeInfos by port; a node is alive if not failing and in `ours`."""
    nodes = []
    for line in str(text).splitlines():
        fields = line.split()
        node_id, address, flags, primary = fields[0], fields[1], fields[2].split(","), fields[3]
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        slots = []
        for spec in fields[8:]:
            if spec.startswith("["):  # a slot being migrated
                continue
            first, _, last = spec.partition("-")
            slots.append((int(first), int(last or first)))
        role = "primary" if "master" in flags else "replica"
        alive = not ({"fail", "fail?", "noaddr"} & set(flags)) and port in ours
        nodes.append(
            NodeInfo(port, node_id, role, tuple(slots), None if primary == "-" else primary, alive)
        )
    return sorted(nodes, key=lambda n: n.port)


def cluster_ports(n: int) -> list[int]:
    """`n` free loopback ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port + 10000 > 65535 or port in ports or not _bindable(port + 10000):
            continue
        ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
