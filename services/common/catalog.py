"""Open the Iceberg catalog the settings name (SQLite by default; PostgreSQL or REST by configuration)."""

from __future__ import annotations

from pyiceberg.catalog import Catalog, load_catalog

from services.common.settings import K2Settings


def open_catalog(settings: K2Settings | None = None, name: str = "k2") -> Catalog:
    settings = settings or K2Settings()
    if settings.catalog_type == "sql" and settings.resolved_catalog_uri.startswith("sqlite:///"):
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
        if settings.resolved_warehouse.startswith("file://"):
            (settings.resolved_data_dir / "warehouse").mkdir(parents=True, exist_ok=True)
    return load_catalog(name, **settings.catalog_properties())
