"""Real Redis Sentinel and Redis Cluster deployments for tests, on 127.0.0.1 free ports.

`start_sentinel(directory)`: a master, one replica (`--replicaof`) and three sentinels
(`redis-server <conf> --sentinel`) with short timeouts, so a failover after `kill_master()`
completes in a few seconds.  The sentinels are started already knowing each other and the
replica (`sentinel myid` / `known-sentinel` / `known-replica` in their config files), so they
need not wait for the 2 s hello round before they can vote.

`start_cluster(directory)`: three masters (`--cluster-enabled yes`, each with its own
`cluster-config-file` in the directory) joined by `redis-cli --cluster create
--cluster-replicas 0 --cluster-yes`, ready once every node reports `cluster_state:ok`.

Both are context managers: every process they start, they stop by pid (SIGTERM, then
SIGKILL), also when the start fails half-way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install redis-server")
    return path


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` (exceptions count as not yet) until true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        time.sleep(0.02)


class Node:
    """One redis-server process (data node or sentinel) that we own."""

    def __init__(self, directory: Path, args: list[str], port: int, config: str = "") -> None:
        self.port = port
        self.directory = directory
        self._args = args
        self._config = config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn without waiting (start several, then `wait_ready` each)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [_binary("redis-server")]
        if self._config:
            config = self.directory / "redis.conf"
            config.write_text(self._config)
            args.append(str(config))
        args += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        log = (self.directory / "log").open("ab")
        with log:
            self.process = subprocess.Popen([*args, *self._args], stdout=log, stderr=log)

    def wait_ready(self, timeout: float = 10) -> None:
        def answers() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"redis-server on {self.port} exited: see {self.directory}")
            with self.client(socket_timeout=0.5) as client:
                return bool(client.ping())

        wait_until(answers, timeout, f"redis-server on port {self.port} answers PING")

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def pause(self) -> None:
        """SIGSTOP: hung, but its port still accepts connections (the kernel's backlog)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to tell anyone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused process can't stop
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while picking)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _data_node(directory: Path, port: int, *extra: str) -> Node:
    args = ["--save", "", "--appendonly", "no", "--protected-mode", "no", *extra]
    return Node(directory / f"node-{port}", args, port)


@contextlib.contextmanager
def _owning(nodes: list[Node]) -> Iterator[None]:
    try:
        yield
    finally:
        for node in nodes:
            node.stop()


@dataclasses.dataclass
class SentinelSetup:
    data_nodes: list[Node]  # [first master, first replica]
    sentinels: list[Node]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def reported_masters(self) -> set[int]:
        """The master port each sentinel reports right now."""
        ports = set()
        for sentinel in self.sentinels:
            with sentinel.client(socket_timeout=0.5) as client:
                _, port = client.sentinel_get_master_addr_by_name(SERVICE)
                ports.add(int(port))
        return ports

    def master(self) -> Node:
        """The data node every sentinel agrees is the master."""
        (port,) = self.reported_masters()
        return next(node for node in self.data_nodes if node.port == port)

    def kill_master(self) -> Node:
        master = self.master()
        master.kill()
        return master

    def wait_for_new_master(self, old: Node, timeout: float = 15) -> Node:
        """Until all sentinels name another node, and that node says it is a master."""

        def promoted() -> bool:
            ports = self.reported_masters()
            if len(ports) != 1 or old.port in ports:
                return False
            with self.master().client(socket_timeout=0.5) as client:
                return bool(client.info("replication")["role"] == "master")

        wait_until(promoted, timeout, f"sentinels promote a replica of {old.port}")
        return self.master()

    def stored_keys(self, pattern: str = "*") -> set[str]:
        with self.master().client() as client:
            return {key.decode() for key in client.scan_iter(match=pattern, count=1000)}

    def flush(self) -> None:
        with self.master().client() as client:
            client.flushall()


def _sentinel_config(master: Node, replica: Node, port: int, ids: dict[int, str]) -> str:
    """Sentinel `port`'s config: it already knows its peers (`ids`: port → myid) and the
    replica, so a failover can start without waiting for their hello messages."""
    lines = [
        f"sentinel myid {ids[port]}",
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2",
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {SERVICE} 1",
        f"sentinel known-replica {SERVICE} 127.0.0.1 {replica.port}",
    ]
    lines += [
        f"sentinel known-sentinel {SERVICE} 127.0.0.1 {peer} {peer_id}"
        for peer, peer_id in ids.items()
        if peer != port
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def start_sentinel(directory: Path) -> Iterator[SentinelSetup]:
    # Diskless sync without its default 5 s delay: the replica is in sync at once.
    sync = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
    master_port, replica_port, *sentinel_ports = free_ports(5)
    master = _data_node(directory, master_port, *sync)
    replica = _data_node(
        directory, replica_port, *sync, "--replicaof", "127.0.0.1", str(master_port)
    )
    ids = {port: secrets.token_hex(20) for port in sentinel_ports}
    sentinels = [
        Node(
            directory / f"sentinel-{port}",
            ["--sentinel"],
            port,
            config=_sentinel_config(master, replica, port, ids),
        )
        for port in ids
    ]
    nodes = [master, replica, *sentinels]
    with _owning(nodes):
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        setup = SentinelSetup([master, replica], sentinels)

        def in_sync() -> bool:
            with replica.client() as client:
                return bool(client.info("replication")["master_link_status"] == "up")

        def sentinels_agree() -> bool:
            for sentinel in sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(SERVICE)
                    if state["num-other-sentinels"] != 2 or state["num-slaves"] != 1:
                        return False
                    if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
                        return False
            return setup.reported_masters() == {master.port}

        wait_until(in_sync, 10, "the replica is in sync with the master")
        wait_until(sentinels_agree, 10, "every sentinel sees the master, replica and peers")
        yield setup


@dataclasses.dataclass
class ClusterSetup:
    nodes: list[Node]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def client(self) -> redis.RedisCluster:
        """A synchronous cluster client, for looking at what the gateway stored."""
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def ports_for(self, keys: list[str]) -> set[int]:
        """The ports of the nodes serving these keys' slots."""
        with self.client() as client:
            return {int(client.get_node_from_key(key).port) for key in keys}

    @property
    def ports(self) -> set[int]:
        return {node.port for node in self.nodes}

    def keys_by_node(self, pattern: str = "*") -> dict[int, set[str]]:
        """Each node's port and the keys it holds (each key lives on exactly one node)."""
        keys = {}
        for node in self.nodes:
            with node.client() as client:
                found = client.scan_iter(match=pattern, count=1000)
                keys[node.port] = {key.decode() for key in found}
        return keys

    def stored_keys(self, pattern: str = "*") -> set[str]:
        return set().union(*self.keys_by_node(pattern).values())

    def flush(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.flushall()


@contextlib.contextmanager
def start_cluster(directory: Path, size: int = 3) -> Iterator[ClusterSetup]:
    # cluster-config-file is relative to --dir: each node keeps its own.  The bus port is
    # free-picked too (its default, port + 10000, may be taken or above 65535).
    cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    cluster += ["--cluster-node-timeout", "5000"]
    ports = free_ports(2 * size)
    nodes = [
        _data_node(directory, port, *cluster, "--cluster-port", str(bus_port))
        for port, bus_port in zip(ports[:size], ports[size:], strict=True)
    ]
    with _owning(nodes):
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        created = subprocess.run(
            [_binary("redis-cli"), *create], capture_output=True, text=True, timeout=30
        )
        assert created.returncode == 0, f"redis-cli --cluster create: {created.stdout}"

        def all_ok() -> bool:
            for node in nodes:
                with node.client() as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
            return True

        wait_until(all_ok, 15, "every cluster node reports cluster_state:ok")
        yield ClusterSetup(nodes)
