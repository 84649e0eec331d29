"""What the project's local JVM servers share (the REST catalog fixture, S3Proxy): their jars resolved
from a pinned pom into a git-ignored cache, and stopping a server process.

The Kafka broker (deploy/kafka) keeps its own copy of the resolution: it predates this module and adds
a version check of its own."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path


def fetch_jars(pom: Path, libs_dir: Path, what: str, error: type[Exception], quiet: bool = True) -> Path:
    """Resolve `pom`'s runtime dependencies into `libs_dir`, once per pom content (a marker holds the pom
    they came from); return `libs_dir`. `what` names the server in errors, raised as `error`."""
    marker = libs_dir / ".complete"
    if marker.exists() and marker.read_text() == pom.read_text():
        return libs_dir
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise error(f"`{tool}` is not on PATH: {what} needs Java 17+ and Maven")
    if libs_dir.exists():
        shutil.rmtree(libs_dir)
    cmd = ["mvn", "-B", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime"]
    cmd.append(f"-DoutputDirectory={libs_dir}")
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0:
        raise error(f"maven could not resolve the jars of {what}:\n{result.stdout}\n{result.stderr}")
    marker.write_text(pom.read_text())
    return libs_dir


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM (a JVM runs its shutdown hooks), SIGKILL if it lingers. Nothing if already gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
