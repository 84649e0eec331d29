"""What the project's local JVM servers share (the REST catalog fixture, S3Proxy): their jars resolved
from a pinned pom into a git-ignored cache, waiting until a server answers, and stopping it.

The Kafka broker (deploy/kafka) keeps its own copy of the resolution: it predates this module and adds
a version check of its own."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
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


def wait_http(
    proc: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    what: str,
    error: type[Exception],
    log_file: Path,
    any_answer: bool = False,
) -> None:
    """Until GET `url` answers 200 (with `any_answer`, any HTTP status: an unsigned request's 403 is an
    answer too); `error` with the log's tail if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise error(f"{what} exited with {proc.returncode}:\n{log_tail(log_file)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_answer:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise error(f"{what} did not answer {url} in {timeout}s ({last}):\n{log_tail(log_file)}")


def log_tail(log_file: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"
