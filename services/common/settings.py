"""Settings shared by every K2 process, read from `K2_*` environment variables.

Each service adds its own settings class in `services/<service>/settings.py`, subclassing
`K2Settings` (same `K2_` prefix) with fields named `<service>_...`, so its variables read
`K2_<SERVICE>_...`; `python -m services.common.settings` prints the table
of every variable (docs/settings.md is generated from it and checked by a test).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _check_port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {value}")
    return value


class K2Settings(BaseSettings):
    """What every process needs: where local state lives, the broker, the catalog, the instruments."""

    model_config = SettingsConfigDict(env_prefix="K2_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path(".data"),
        description="Folder for everything a local run writes: broker logs, catalog.db, warehouse/, logs/.",
    )
    kafka_bootstrap: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    kafka_port: int = Field(
        19092, description="Port of the local broker started by `task up` (its PLAINTEXT listener)."
    )
    kafka_controller_port: int = Field(19093, description="KRaft controller port of the local broker.")
    kafka_heap: str = Field("512m", description="Heap (-Xmx) of the local broker JVM.")
    catalog_type: Literal["sql", "rest"] = Field(
        "sql", description="Iceberg catalog kind: `sql` (SQLite or PostgreSQL) or `rest`."
    )
    catalog_uri: str = Field("", description="Catalog URI; empty means sqlite:///<K2_DATA_DIR>/catalog.db.")
    warehouse: str = Field("", description="Warehouse location; empty means file://<K2_DATA_DIR>/warehouse.")
    s3_endpoint: str = Field("", description="S3 endpoint for the warehouse (MinIO), if any.")
    s3_access_key_id: str = Field("", description="S3 access key id.")
    s3_secret_access_key: str = Field("", description="S3 secret access key.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    instruments_file: Path | None = Field(
        None, description="JSON instrument list to use instead of the bundled one."
    )
    feed_source: Literal["live", "simulator", "none"] = Field(
        "simulator",
        description="What the feed connects to: the exchanges (`live`), the local simulator, or nothing.",
    )
    metrics_port: int = Field(
        0, description="Port of this process's /metrics; 0 means the service's default port."
    )
    metrics_host: str = Field("127.0.0.1", description="Interface /metrics listens on.")
    log_level: str = Field("INFO", description="Python log level.")

    @field_validator("kafka_port", "kafka_controller_port", "metrics_port")
    @classmethod
    def _check_ports(cls, value: int) -> int:
        return _check_port(value)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bootstrap server {server!r} is not host:port")
            _check_port(int(port))
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return value.upper()

    @model_validator(mode="after")
    def _check_instruments(self) -> K2Settings:
        if self.instruments_file is not None and not self.instruments_file.is_file():
            raise ValueError(f"K2_INSTRUMENTS_FILE {self.instruments_file} does not exist")
        return self

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def logs_dir(self) -> Path:
        return self.resolved_data_dir / "logs"

    @property
    def resolved_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.resolved_data_dir / 'catalog.db'}"

    @property
    def resolved_warehouse(self) -> str:
        return self.warehouse or f"file://{self.resolved_data_dir / 'warehouse'}"

    def catalog_properties(self) -> dict[str, str]:
        """Properties for `pyiceberg.catalog.load_catalog`, the same call for every catalog kind."""
        props: dict[str, str] = {
            "type": self.catalog_type,
            "uri": self.resolved_catalog_uri,
            "warehouse": self.resolved_warehouse,
        }
        if self.s3_endpoint:
            props.update(
                {
                    "s3.endpoint": self.s3_endpoint,
                    "s3.access-key-id": self.s3_access_key_id,
                    "s3.secret-access-key": self.s3_secret_access_key,
                    "s3.region": self.s3_region,
                    "s3.path-style-access": "true",
                }
            )
        return props


def settings_table(cls: type[BaseSettings], inherited: frozenset[str] = frozenset()) -> str:
    """A Markdown table of the environment variables a settings class reads (less the inherited ones)."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    seen: set[str] = set(inherited)
    prefix = cls.model_config.get("env_prefix", "")
    for name, field in cls.model_fields.items():
        var = f"{prefix}{name}".upper()
        if var in seen:
            continue
        seen.add(var)
        default = field.default if field.default is not None else ""
        if isinstance(default, Path):
            default = str(default)
        rows.append(f"| `{var}` | `{default}` | {field.description or ''} |")
    return "\n".join(rows) + "\n"


def all_settings_classes() -> list[type[BaseSettings]]:
    """Every settings class of the platform: the shared one, then each service's, if it has one."""
    import importlib

    classes: list[type[BaseSettings]] = [K2Settings]
    for service in ("feed", "normalizer", "ohlcv", "lakewriter", "query"):
        try:
            module = importlib.import_module(f"services.{service}.settings")
        except ModuleNotFoundError:
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not K2Settings
                and value.__module__ == module.__name__
            ):
                classes.append(value)
    return classes


def render_settings_doc() -> str:
    parts = [
        "# Settings\n",
        "Every setting is an environment variable. Generated by "
        "`python -m services.common.settings`; a test checks it is current.\n",
    ]
    shared = frozenset(f"K2_{name}".upper() for name in K2Settings.model_fields)
    for cls in all_settings_classes():
        parts.append(f"\n## {cls.__module__}.{cls.__name__}\n\n{(cls.__doc__ or '').strip()}\n\n")
        parts.append(settings_table(cls, frozenset() if cls is K2Settings else shared))
    return "".join(parts)


def env_for(settings: K2Settings, **overrides: str) -> dict[str, str]:
    """The environment a child process needs to see the same settings (plus overrides)."""
    env = dict(os.environ)
    env.update(
        {
            "K2_DATA_DIR": str(settings.resolved_data_dir),
            "K2_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "K2_KAFKA_PORT": str(settings.kafka_port),
            "K2_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
        }
    )
    env.update(overrides)
    return env


if __name__ == "__main__":
    # Import by name so classes are documented under their module, not __main__.
    from services.common import settings as _named

    print(_named.render_settings_doc(), end="")
