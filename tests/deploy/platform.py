"""The whole platform under the local supervisor, on free ports and a temporary K2_DATA_DIR."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from deploy.local.plan import REPO
from deploy.local.supervisor import Supervisor


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(size: int = 100) -> int:
    """A base port whose next `size` ports are free right now, below the ephemeral range.

    Services bind their ports up to a minute after the plan is made (imports on a busy machine): a port
    from the ephemeral range could meanwhile be taken by any outgoing connection on the machine.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(max(10000, low - 12000), low - size)
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError("no free block of ports")


class LocalPlatform:
    """`python -m deploy.local ...` with an isolated environment."""

    def __init__(self, data_dir: Path, **overrides: str) -> None:
        # Services use base + 20*i + replica (i ≤ 4, replicas < 10); the rest of the block is free for these.
        base = free_port_block()
        kafka = base + 90
        self.data_dir = data_dir
        self.prometheus_port = base + 92
        self.env = {
            **os.environ,
            "K2_DATA_DIR": str(data_dir),
            "K2_KAFKA_PORT": str(kafka),
            "K2_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
            "K2_KAFKA_CONTROLLER_PORT": str(base + 91),
            "K2_PROMETHEUS_PORT": str(self.prometheus_port),
            "K2_DEPLOY_PORT_BASE": str(base),
            "K2_DEPLOY_QUERY_PORT": str(base + 93),
            "K2_DEPLOY_SIMULATOR_PORT": str(base + 98),
            "K2_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **overrides,
        }

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.local", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.data_dir.resolve())

    def plan(self) -> list[dict[str, Any]]:
        return json.loads((self.data_dir / "run" / "plan.json").read_text())

    def process(self, name: str) -> dict[str, Any]:
        service = name.rsplit("-", 1)[0]
        return self.supervisor.rpc().supervisor.getProcessInfo(f"{service}:{name}")

    def prometheus(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.prometheus_port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def logs(self) -> str:
        """The tail of every log, for assertion messages."""
        parts = []
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)
