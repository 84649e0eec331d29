"""Open the Iceberg catalog the settings name (SQLite by default; PostgreSQL or REST by configuration)."""

from __future__ import annotations

import time

from pyiceberg.catalog import Catalog, load_catalog
from sqlalchemy.exc import IntegrityError, ProgrammingError

from services.common.settings import K2Settings

# SqlCatalog creates its own tables on first use ("CREATE TABLE" after a probe, not atomic): processes that
# open an empty PostgreSQL catalog at the same moment race, and the loser fails with a unique violation
# (IntegrityError) or "relation already exists" (ProgrammingError). Opening again finds the tables.
INIT_ATTEMPTS = 3


def open_catalog(settings: K2Settings | None = None, name: str = "k2") -> Catalog:
    settings = settings or K2Settings()
    if settings.catalog_type == "sql" and settings.resolved_catalog_uri.startswith("sqlite:///"):
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
        if settings.resolved_warehouse.startswith("file://"):
            (settings.resolved_data_dir / "warehouse").mkdir(parents=True, exist_ok=True)
    for attempt in range(INIT_ATTEMPTS):
        try:
            return load_catalog(name, **settings.catalog_properties())
        except (IntegrityError, ProgrammingError):
            if settings.catalog_type != "sql" or attempt + 1 >= INIT_ATTEMPTS:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")
