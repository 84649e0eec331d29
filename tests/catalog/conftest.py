"""Fixtures: a real PostgreSQL server (one per session, a fresh database per test), a real Iceberg REST
catalog server (Apache Iceberg's test fixture, a JVM) and a real S3 server (S3Proxy, a JVM), all on free
ports, always stopped."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.iceberg_rest.server import LocalRestCatalog
from deploy.local.postgres import LocalPostgres
from deploy.s3proxy.server import CLIENT_ENV, LocalS3


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def pg_uri(postgres: LocalPostgres) -> str:
    """A new empty database for this test (the catalog tables are per database): its SQLAlchemy URI."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with contextlib.closing(postgres.connect("postgres")) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    return postgres.uri.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def rest_catalog(tmp_path: Path) -> Iterator[LocalRestCatalog]:
    with LocalRestCatalog(tmp_path / "iceberg-rest") as server:
        yield server


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalS3]:
    """S3Proxy; this process's S3 clients (pyiceberg, pyarrow) get its CLIENT_ENV too."""
    with LocalS3(tmp_path / "s3proxy") as server:
        for key, value in CLIENT_ENV.items():
            monkeypatch.setenv(key, value)
        yield server
