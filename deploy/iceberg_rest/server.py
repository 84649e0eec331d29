"""Resolve, start, wait for and stop Apache Iceberg's REST catalog test-fixture server.

`org.apache.iceberg.rest.RESTCatalogServer` (the server of the apache/iceberg-rest-fixture image) serves
the Iceberg REST protocol in front of a JdbcCatalog; here its catalog is a SQLite file and its warehouse a
local folder (HadoopFileIO), both under the caller's data dir. The jars come from Maven Central through
`pom.xml` (pinned versions) into a git-ignored cache, like deploy/kafka. The server is configured by
CATALOG_* environment variables (CATALOG_REST_PORT → rest.port, CATALOG_URI → uri, ...); it listens on
all interfaces (the fixture has no host setting), on a free port chosen here.
Used by the REST catalog tests (tests/catalog) and `python -m deploy.iceberg_rest`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from deploy import jvm
from deploy.local_server import LocalServer
from services.common.metrics import free_port

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("K2_ICEBERG_REST_CACHE", HERE / ".cache"))
LIBS_DIR = CACHE_DIR / "libs"
POM = HERE / "pom.xml"
MAIN_CLASS = "org.apache.iceberg.rest.RESTCatalogServer"


class RestCatalogError(RuntimeError):
    """The REST catalog server could not be resolved, started or reached."""


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve the server's jars into the cache (once per pom content); return the folder holding them."""
    return jvm.fetch_jars(POM, LIBS_DIR, "the REST catalog server", RestCatalogError, quiet)


def s3_properties(endpoint: str, access_key_id: str, secret_access_key: str, region: str) -> dict[str, str]:
    """Catalog properties that make the server read and write an s3:// warehouse (Iceberg's S3FileIO,
    path-style requests) at an S3-compatible endpoint such as MinIO or deploy/s3proxy."""
    return {
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "s3.endpoint": endpoint,
        "s3.path-style-access": "true",
        "s3.access-key-id": access_key_id,
        "s3.secret-access-key": secret_access_key,
        "client.region": region,
    }


class LocalRestCatalog(LocalServer):
    """One REST catalog server: `start()`, `uri`, `warehouse`, `stop()` (or use it as a context manager).

    Its JDBC catalog (`catalog.db`) lives in `home`, the table files under `warehouse` (default
    `<home>/warehouse`); both stay after `stop()`, so a restarted server sees the same tables."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        warehouse: Path | str | None = None,
        heap: str = "256m",
        properties: dict[str, str] | None = None,
    ) -> None:
        """`warehouse`: a local folder, or an `s3://bucket/prefix` URI; then `properties` must give the
        server an S3 FileIO (see `s3_properties`). `properties` are extra catalog properties."""
        self.home = Path(home).resolve()
        self.port = port or free_port()
        self.warehouse_uri = warehouse if isinstance(warehouse, str) and "://" in warehouse else None
        self.warehouse_dir = (
            self.home / "warehouse" if warehouse is None or self.warehouse_uri else Path(warehouse).resolve()
        )
        self.properties = dict(properties or {})
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """What K2_CATALOG_URI takes (with K2_CATALOG_TYPE=rest)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def warehouse(self) -> str:
        return self.warehouse_uri or f"file://{self.warehouse_dir}"

    @property
    def log_file(self) -> Path:
        return self.home / "iceberg-rest.log"

    def start(self, timeout: float = 60.0) -> LocalRestCatalog:
        if self.proc is not None:
            return self
        libs = fetch_jars()
        if self.warehouse_uri is None:
            self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        # The fixture turns every CATALOG_* variable into a catalog property: pass only ours.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")}
        env.update(
            {
                "CATALOG_REST_PORT": str(self.port),
                "CATALOG_URI": f"jdbc:sqlite:file:{self.home / 'catalog.db'}",
                "CATALOG_WAREHOUSE": self.warehouse,
            }
        )
        # The fixture maps CATALOG_A_B__C to the property a.b-c.
        for key, value in self.properties.items():
            env["CATALOG_" + key.replace("-", "__").replace(".", "_").upper()] = value
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                ["java", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-cp", f"{libs}/*", MAIN_CLASS],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the JVM stops Jetty), SIGKILL if it lingers. Idempotent."""
        proc, self.proc = self.proc, None
        jvm.stop_process(proc, timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until GET /v1/config answers 200 (the JVM and Jetty take a few seconds)."""
        assert self.proc is not None
        jvm.wait_http(
            self.proc, f"{self.uri}/v1/config", timeout, "REST catalog", RestCatalogError, self.log_file
        )
