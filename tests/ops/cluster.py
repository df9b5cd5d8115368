"""A throwaway Redis Cluster on loopback: N masters of the embedded valkey-server, no replicas.

The cluster is formed by the commands `redis-cli --cluster create` sends (there is no redis-cli):
each node gets its own config epoch and a contiguous share of the 16384 slots, then the first node
meets the others.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from pathlib import Path

import redis

from service.embedded.redis import valkey_server_path

# each node's cluster bus is on its port + 10000, which must be free as well
BUS_OFFSET = 10000
SLOTS = 16384


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A port that is free, below the ephemeral range, with its bus port free too."""
    for _ in range(500):
        port = random.randint(20000, 29999)
        if port not in taken and _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """Start with `start()`, always `stop()`: every node is a child process of this one."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        self.masters = masters
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 20.0) -> None:
        for _ in range(self.masters):
            port = cluster_port(set(self.ports))
            node_dir = self.root / str(port)
            node_dir.mkdir(parents=True)
            self.ports.append(port)
            self.procs.append(subprocess.Popen(
                [valkey_server_path(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000", "--dir", str(node_dir),
                 "--save", "", "--appendonly", "no", "--logfile", "redis.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            ))
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while not self._pings(port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} did not start")
                time.sleep(0.02)
        self._create()
        while not all(self._state_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _create(self) -> None:
        """Slots and epochs on each node, then one MEET per other node; gossip does the rest."""
        for i, port in enumerate(self.ports):
            first, last = i * SLOTS // self.masters, (i + 1) * SLOTS // self.masters - 1
            with self._client(port) as client:
                # distinct epochs, as redis-cli sets them, so no node waits out a collision
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        with self._client(self.ports[0]) as client:
            for port in self.ports[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", port)

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)

    def _pings(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError), self._client(port) as client:
            return bool(client.ping())
        return False

    def _state_ok(self, port: int) -> bool:
        with self._client(port) as client:
            info = client.cluster("INFO")
        return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_assigned", 0)) == 16384

    def node_of(self, key: str) -> int:
        """The port of the master that holds `key`'s slot."""
        with self._client(self.ports[0]) as client:
            slot = client.execute_command("CLUSTER KEYSLOT", key)
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no node holds slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL one node (a master lost without warning)."""
        proc = self.procs[self.ports.index(port)]
        proc.kill()
        proc.wait(timeout=10)

    def state(self, port: int) -> str:
        with self._client(port) as client:
            return str(client.cluster("INFO").get("cluster_state"))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
