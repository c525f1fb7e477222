"""A real redis-server for the tests and benchmarks: started on a free loopback port in its own folder, with the
append-only file on and fsynced on every write by default (appendfsync="always": docs/serving.md, "Durability"), and
stopped after.

    server = RedisServer(tmp_path).start()      # server.url == "redis://127.0.0.1:PORT/0"; appendfsync="everysec" too
    server.kill(); server.start()               # SIGKILL, then a restart on the same folder and port (crash tests)
    server.stop()

The binary is $REDIS_SERVER or `redis-server` on PATH; `make test` installs the OS package (Makefile, rule
redis-server). Only 127.0.0.1 is ever bound or contacted.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

LOOPBACK = "127.0.0.1"


def redis_server_binary() -> Optional[str]:
    """Path of the redis-server to run, or None when there is none."""
    named = os.environ.get("REDIS_SERVER", "redis-server")
    return shutil.which(named)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process bound to 127.0.0.1 in `directory` (its AOF, log and pid live there)."""

    def __init__(self, directory, port: Optional[int] = None, binary: Optional[str] = None,
                 appendfsync: str = "always"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.binary = binary or redis_server_binary()
        if self.binary is None:
            raise FileNotFoundError("redis-server not found: run `make redis-server` (installs the OS package) "
                                    "or set REDIS_SERVER to its path")
        self.port = port or free_loopback_port()
        self.appendfsync = appendfsync      # "always" (the durable set-up) or "everysec"; read at each start
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def _command(self) -> list:
        return [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--protected-mode", "yes",
                "--dir", str(self.directory), "--logfile", str(self.log), "--daemonize", "no",
                "--appendonly", "yes", "--appendfsync", self.appendfsync,   # docs/serving.md, "Durability"
                "--save", ""]                                       # no RDB snapshots: the AOF is the record

    def start(self, timeout_s: float = 20.0) -> "RedisServer":
        """Start (or restart after kill/stop) on the same folder and port; returns once it answers PING."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}: "
                                   f"{err.strip()} {self._log_tail()}")
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"redis-server on port {self.port} did not answer within {timeout_s} s {self._log_tail()}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")     # "-LOADING" while the AOF is replayed
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return "; log: " + " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync — what a crash does."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()

    def restart(self) -> "RedisServer":
        self.kill()
        return self.start()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
