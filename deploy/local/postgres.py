"""A throwaway local PostgreSQL server: initdb in a temp dir, a free port, always stopped.

Used by the PostgreSQL catalog tests (tests/catalog) to run pyiceberg's SqlCatalog on a real server.
The binaries come from Debian's packages (deploy/local/install-postgres.sh); K2_POSTGRES_BIN names
another folder holding `initdb` and `postgres`. initdb and postgres refuse to run as root, so under root
the server runs as the unprivileged `postgres` system user the Debian package creates (`run_as`); its
files live in a fresh folder under the system temp dir (pytest's tmp dirs are private to root).
The server listens on 127.0.0.1 and a unix socket in that folder, trusts local connections (a
throwaway test database: no password), and runs with fsync off (nothing it holds must survive).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

from deploy.local_server import LocalServer
from services.common.metrics import free_port

DEFAULT_USER = "postgres"


class PostgresError(RuntimeError):
    """The server could not be found, initialised, started or reached."""


def find_bin_dir() -> Path:
    """The folder holding `initdb` and `postgres`: K2_POSTGRES_BIN, Debian's newest, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("K2_POSTGRES_BIN"):
        candidates.append(Path(os.environ["K2_POSTGRES_BIN"]))
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p)], reverse=True)
    candidates.extend(Path(p) for p in debian)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PostgresError(
        "PostgreSQL server binaries (initdb, postgres) not found in "
        f"{[str(c) for c in candidates] or '/usr/lib/postgresql/*/bin or PATH'}: run "
        "deploy/local/install-postgres.sh (apt-get install postgresql, as root) or set K2_POSTGRES_BIN"
    )


class LocalPostgres(LocalServer):
    """One PostgreSQL server for tests: `start()`, `uri`, `stop()` (or use it as a context manager)."""

    def __init__(
        self,
        port: int | None = None,
        database: str = "k2",
        user: str = "k2",
        run_as: str | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.database = database
        self.user = user  # the database superuser initdb creates
        # The OS user the server runs as: ourselves, unless we are root (then the `postgres` user).
        self.run_as = run_as or (DEFAULT_USER if os.geteuid() == 0 else None)
        self.bin_dir = bin_dir
        self.home: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """SQLAlchemy URI (psycopg2 driver), as K2_CATALOG_URI takes it."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_file(self) -> Path:
        assert self.home is not None, "not started"
        return self.home / "postgres.log"

    def connect(self, database: str | None = None) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            dbname=database or self.database,
            connect_timeout=5,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        if self.proc is not None:
            return self
        bin_dir = self.bin_dir or find_bin_dir()
        missing = [name for name in ("initdb", "postgres") if not (bin_dir / name).is_file()]
        if missing:
            raise PostgresError(
                f"{', '.join(missing)} not found in {bin_dir}: run deploy/local/install-postgres.sh "
                "(apt-get install postgresql, as root) or point K2_POSTGRES_BIN at the server binaries"
            )
        ids = self._ids()
        self.home = Path(tempfile.mkdtemp(prefix="k2-postgres-"))
        data = self.home / "data"
        if ids is not None:
            os.chown(self.home, *ids)
        try:
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                ids,
            )
            log = self.log_file.open("ab")
            self.proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.home),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=32MB",
                    "-c",
                    "max_connections=100",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run reaches us, not the server directly
                **self._user_kwargs(ids),
            )
            log.close()
            atexit.register(self.stop)
            self._wait_ready(timeout)
            with contextlib.closing(self.connect("postgres")) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f'CREATE DATABASE "{self.database}"')
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL if it lingers; the temp folder is removed. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None
        atexit.unregister(self.stop)

    # -- internals ------------------------------------------------------------------------------

    def _ids(self) -> tuple[int, int] | None:
        if self.run_as is None:
            return None
        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise PostgresError(
                f"PostgreSQL refuses to run as root and there is no `{self.run_as}` user to run it as: "
                "run deploy/local/install-postgres.sh (the Debian package creates it) or pass run_as"
            ) from None
        return entry.pw_uid, entry.pw_gid

    @staticmethod
    def _user_kwargs(ids: tuple[int, int] | None) -> dict[str, object]:
        if ids is None:
            return {}
        return {"user": ids[0], "group": ids[1], "extra_groups": [], "cwd": "/"}

    def _run(self, cmd: list[str], ids: tuple[int, int] | None) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True, **self._user_kwargs(ids))  # type: ignore[call-overload]
        if result.returncode != 0:
            raise PostgresError(
                f"{Path(cmd[0]).name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self.proc.returncode}:\n{self._log_tail()}")
            try:
                psycopg2.connect(
                    host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", connect_timeout=2
                ).close()
                return
            except psycopg2.OperationalError as exc:  # starting up / not listening yet
                last = exc
                time.sleep(0.1)
        raise PostgresError(
            f"postgres did not accept connections in {timeout}s ({last}):\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_for_stop() -> None:
    """Block until SIGINT or SIGTERM. The handlers are set here: a background job may have inherited
    SIGINT ignored, and SIGTERM would otherwise end Python without stopping the server."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


if __name__ == "__main__":  # a server for manual use: start, print the URI, stop on Ctrl-C / SIGTERM
    with LocalPostgres() as pg:
        print(f"K2_CATALOG_URI={pg.uri}", flush=True)
        wait_for_stop()
