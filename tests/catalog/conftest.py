"""Fixtures: a real PostgreSQL server (one per session, a fresh database per test) and a real Iceberg REST
catalog server (Apache Iceberg's test fixture, a JVM), both on free ports, always stopped."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.iceberg_rest.server import LocalRestCatalog
from deploy.local.postgres import LocalPostgres


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
