"""A real `redis-server` for tests: its own free port on 127.0.0.1, its own directory,
stopped by PID. Never a system one."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from support import free_port, stop_process, wait_for


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """`start()` / `stop()` may be called again: a restart keeps the port and the directory
    (and with `persist`, the data: an RDB snapshot is written on SIGTERM)."""

    def __init__(self, directory: Path, *, persist: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: `make test` installs it")
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []  # more redis-server arguments (cluster mode)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "3600 1" if self.persist else "",
            "--appendonly", "no",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._exited() or _answers(self.port))
        return self

    def _exited(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"redis-server exited with {self.proc.returncode}:\n{log}")
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None


class RedisClusterNodes:
    """Three `redis-server --cluster-enabled yes` primaries (no replicas) joined by
    `redis-cli --cluster create`; `url` is the `redis+cluster://` seed logd takes."""

    def __init__(self, directory: Path) -> None:
        self.servers = [RedisServer(directory / f"node{i}") for i in range(3)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def start(self) -> RedisClusterNodes:
        for server in self.servers:
            server.extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(free_port()),  # not port + 10000: that may be taken
            ]  # fmt: skip
            server.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is missing: `make test` installs redis-tools")
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_for(lambda: all(self._ok(cli, s.port) for s in self.servers))
        return self

    @staticmethod
    def _ok(cli: str, port: int) -> bool:
        args = [cli, "-p", str(port), "cluster", "info"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=5).stdout
        return "cluster_state:ok" in out

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
