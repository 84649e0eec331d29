"""Property-based run of schemathesis over the OpenAPI spec: no input may produce a 5xx.

Bounded (a few examples per operation, no shrinking database) so the directory stays fast. The
SSE operation is left out here (a valid request never ends); tests/query/test_live.py covers it.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from services.query.app import create_app
from tests.query.conftest import settings_for
from tests.query.server import ApiServer

MAX_EXAMPLES = 6


def test_no_5xx_for_any_generated_request(known_lake):
    with ApiServer(create_app(settings_for(known_lake.data_dir))) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        checked = []
        for operation in operations:
            if operation.path.endswith("/stream"):
                continue

            @given(case=operation.as_strategy())
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:
                response = case.call(base_url=server.url, timeout=30)
                assert response.status_code < 500, (
                    case.path,
                    case.query,
                    case.path_parameters,
                    response.status_code,
                    response.text[:500],
                )

            check()
            checked.append(operation.path)
    assert {
        "/v1/trades",
        "/v1/ohlcv/{timeframe}",
        "/v1/summary/{exchange}/{symbol}/{day}",
        "/v1/snapshots/{table}",
        "/v1/symbols",
        "/v1/exchanges",
        "/health",
        "/ready",
    } <= set(checked)
