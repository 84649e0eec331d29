"""The context-manager half every local test server shares (REST catalog fixture, S3Proxy, PostgreSQL):
`with Server(...) as server:` starts it and stops it whatever happens inside."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class LocalServer:
    """A server process started by `start()` (which returns the server) and stopped by `stop()`."""

    def start(self, timeout: float = 60.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 20.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
