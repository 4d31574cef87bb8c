"""`RouterProcess`: the router daemon as a real subprocess on free loopback ports, for tests and benchmarks.

    with SimFleet(replicas=4) as sim, RouterProcess(replicas=sim.urls, state_dir=tmp_path) as router:
        client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="x")

It writes a config YAML into ``state_dir``, starts ``python -m pcache.router -c`` with both listeners on
port 0, and reads the bound URLs from the daemon's stdout (``data URL``, ``admin URL``, ``ready``).
Extra keyword arguments become top-level config sections (``health={"interval_s": 0.2}``);
``replica_options`` adds keys to named replicas' entries (``{"r1": {"kv_events": {...}}}``). The
same ``state_dir`` keeps the durable state, so a second RouterProcess on it is a restart.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from pcache.client import AdminClient, SyncAdminClient
from pcache.testing.sim import _pump_lines

__all__ = ["RouterProcess", "RouterStartError"]

DEFAULT_TOKEN = "test-admin-token"


class RouterStartError(RuntimeError):
    """The router did not become ready; the message carries its stderr."""


class RouterProcess:
    """A running ``python -m pcache.router`` subprocess."""

    def __init__(
        self,
        replicas: Mapping[str, str],
        policy: str = "tiered",
        tier1: Sequence[Mapping[str, Any]] = (),
        state_dir: str | os.PathLike[str] | None = None,
        admin_token: str | None = DEFAULT_TOKEN,
        *,
        policy_params: Mapping[str, Any] | None = None,
        replica_options: Mapping[str, Mapping[str, Any]] | None = None,
        startup_timeout_s: float = 60.0,  # a start can take tens of seconds on a loaded machine
        **config: Any,
    ) -> None:
        if state_dir is None:
            import tempfile

            state_dir = tempfile.mkdtemp(prefix="pcache-router-")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.token = admin_token
        self.startup_timeout_s = startup_timeout_s
        document: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "admin": {"listen": "127.0.0.1:0", "token_env": "PCACHE_TEST_ADMIN_TOKEN"},
            "policy": {"name": policy, "params": dict(policy_params or {})},
            "replicas": [
                {"name": name, "url": url, **(replica_options or {}).get(name, {})}
                for name, url in replicas.items()
            ],
            "tier1": [dict(t) for t in tier1],
            "state": str(self.state_dir / "router-state.sqlite"),
            # Generous timeouts: on a busy machine a healthy replica can take a second to answer, and a
            # replica marked unhealthy by a slow check turns a test's request into a 503.
            "health": {"interval_s": 0.5, "timeout_s": 5.0, "failures": 2, "recoveries": 1},
            "scrape": {"interval_s": 0.5, "timeout_s": 5.0},
        }
        for key, value in config.items():
            if isinstance(value, Mapping) and isinstance(document.get(key), dict):
                document[key] = {**document[key], **value}
            else:
                document[key] = value
        self.config_path = self.state_dir / "router.yaml"
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        self.url = ""
        self.admin_url = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []
        self._openai: Any = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> RouterProcess:
        env = dict(os.environ)
        env.pop("PCACHE_TEST_ADMIN_TOKEN", None)
        if self.token:
            env["PCACHE_TEST_ADMIN_TOKEN"] = self.token
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pcache.router", "-c", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=_pump_lines, args=(self.process.stdout, lines), daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RouterStartError(f"router not ready after {self.startup_timeout_s}s:\n{self.stderr}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.stop()
                raise RouterStartError(f"router exited before ready:\n{self.stderr}")
            kind, _, value = line.strip().partition(" ")
            if kind == "data":
                self.url = value
            elif kind == "admin":
                self.admin_url = value
            elif kind == "ready":
                return self

    def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)
            if len(self._stderr) > 2000:
                del self._stderr[:1000]

    @property
    def stderr(self) -> str:
        """What the router logged so far (all of it once stopped)."""
        if self.process is not None and self.process.poll() is None:
            time.sleep(0.05)  # still running: let its latest lines reach the reader
        return "".join(self._stderr)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Stop the router (SIGTERM, then SIGKILL after ``timeout_s``); returns its exit code."""
        if self._openai is not None:
            self._openai.close()
            self._openai = None
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for reader in self._readers:
            reader.join(5)  # ends at EOF, now that the process is gone
        if not any(reader.is_alive() for reader in self._readers):
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown (to prove the state is durable)."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- clients --------------------------------------------------------------------------------

    def admin(self, token: str | bool | None = True) -> SyncAdminClient:
        """A sync admin client (with this router's token unless ``token`` says otherwise)."""
        chosen = self.token if token is True else (None if token is False else token)
        return SyncAdminClient(self.admin_url, token=chosen)

    def openai(self) -> Any:
        """An ``openai.OpenAI`` client of the data plane (no SDK retries), closed with the router."""
        if self._openai is None:
            import openai

            self._openai = openai.OpenAI(
                base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=30
            )
        return self._openai

    def async_admin(self) -> AdminClient:
        return AdminClient(self.admin_url, token=self.token)
