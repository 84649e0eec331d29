"""Resolve, start, wait for and stop S3Proxy: a real S3-compatible HTTP server for s3:// warehouses.

S3Proxy (org.gaul:s3proxy, Apache-2.0, Java) serves the S3 REST API (SigV2/SigV4, path-style buckets) in
front of a jclouds blob store; here its `filesystem-nio2` provider keeps each bucket as a folder under the
caller's directory, so the lake writer, pyiceberg and pyarrow speak real S3 requests to a local process.
It stands in for MinIO in tests (no Docker here). The jars come from Maven Central through `pom.xml`
(pinned version) into a git-ignored cache, like deploy/iceberg_rest. It is configured by a properties
file written here (endpoint on 127.0.0.1 and a free port, one identity/credential pair).
Used by the S3 warehouse tests (tests/catalog) and `python -m deploy.s3proxy`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from deploy import jvm
from deploy.local_server import LocalServer
from services.common.metrics import free_port

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("K2_S3PROXY_CACHE", HERE / ".cache"))
LIBS_DIR = CACHE_DIR / "libs"
POM = HERE / "pom.xml"
MAIN_CLASS = "org.gaul.s3proxy.Main"
ACCESS_KEY_ID = "k2-local"
SECRET_ACCESS_KEY = "k2-local-secret"
REGION = "us-east-1"
# The AWS SDKs (pyarrow's C++ one included) now add a CRC checksum trailer to every upload by default
# (aws-chunked bodies, STREAMING-UNSIGNED-PAYLOAD-TRAILER); S3Proxy 3.1 rejects those UploadPart requests
# with a 400. The SDK's own switch sends checksums only where an API requires them. Real S3 and recent
# MinIO accept the default; this is for S3Proxy.
CLIENT_ENV = {"AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED"}
LOGBACK_XML = """<configuration>
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{30} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="OUT"/></root>
</configuration>
"""


class S3ProxyError(RuntimeError):
    """S3Proxy could not be resolved, started or reached."""


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve the server's jars into the cache (once per pom content); return the folder holding them."""
    return jvm.fetch_jars(POM, LIBS_DIR, "S3Proxy", S3ProxyError, quiet)


class LocalS3(LocalServer):
    """One S3 server: `start()`, `endpoint`, `env()`, `create_bucket()`, `stop()` (or a context manager).

    Buckets are folders under `<home>/blobs` and stay after `stop()`, so a restarted server serves the
    same objects."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        access_key_id: str = ACCESS_KEY_ID,
        secret_access_key: str = SECRET_ACCESS_KEY,
        heap: str = "256m",
    ) -> None:
        self.home = Path(home).resolve()
        self.port = port or free_port()
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = REGION
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """What K2_S3_ENDPOINT takes."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def log_file(self) -> Path:
        return self.home / "s3proxy.log"

    def env(self) -> dict[str, str]:
        """The K2_S3_* settings that point a K2 process at this server (add K2_WAREHOUSE=s3://...), plus
        CLIENT_ENV: set them in every process that talks to it."""
        return {
            **CLIENT_ENV,
            "K2_S3_ENDPOINT": self.endpoint,
            "K2_S3_ACCESS_KEY_ID": self.access_key_id,
            "K2_S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "K2_S3_REGION": self.region,
        }

    def settings(self) -> dict[str, str]:
        """The same as env(), as K2 settings fields (LakewriterSettings(**s3.settings(), ...))."""
        return {
            "s3_endpoint": self.endpoint,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
            "s3_region": self.region,
        }

    def filesystem(self, **options: object) -> Any:
        """pyarrow's S3 client for this server (signed requests, path-style addressing)."""
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            region=self.region,
            endpoint_override=self.endpoint,
            scheme="http",
            force_virtual_addressing=False,
            **options,
        )

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the S3 API (a signed PUT /<bucket>)."""
        self.filesystem(allow_bucket_creation=True).create_dir(name)

    def start(self, timeout: float = 60.0) -> LocalS3:
        if self.proc is not None:
            return self
        libs = fetch_jars()
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        properties = self.home / "s3proxy.properties"
        properties.write_text(
            "\n".join(
                [
                    f"s3proxy.endpoint={self.endpoint}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={self.access_key_id}",
                    f"s3proxy.credential={self.secret_access_key}",
                    "jclouds.provider=filesystem-nio2",
                    f"jclouds.filesystem.basedir={self.blobs_dir}",
                    "",
                ]
            )
        )
        # The jar ships no logback.xml, so logback's default would log every Jetty event at DEBUG.
        logback = self.home / "logback.xml"
        logback.write_text(LOGBACK_XML)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                ["java", f"-Xmx{self.heap}", "-XX:+UseSerialGC", f"-Dlogback.configurationFile={logback}",
                 "-cp", f"{libs}/*", MAIN_CLASS, "--properties", str(properties)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, SIGKILL if it lingers. Idempotent."""
        proc, self.proc = self.proc, None
        jvm.stop_process(proc, timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until the endpoint answers HTTP at all (an unsigned GET / gets a 403: that is an answer)."""
        assert self.proc is not None
        jvm.wait_http(
            self.proc, f"{self.endpoint}/", timeout, "S3Proxy", S3ProxyError, self.log_file, any_answer=True
        )
