"""REST fuzzing with schemathesis: no 5xx, and every response matches /openapi.json.

The in-process app is loaded with ``schemathesis.openapi.from_asgi``, whose ASGI client runs the
app's lifespan (engine, registry, actors) on its own event-loop thread and keeps it running until
``shutdown_lifespans()``. Requests carry a valid bearer token, so the fuzzer reaches the routes'
logic and not only the 401 in front of them; a few documents with short ids exist so generated
ids sometimes hit one. Short run by default; ``-m slow`` runs many more examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from collab.app import create_app
from collab.settings import Settings
from tests.support import SECRET, migrate, token

HEADERS = {"Authorization": f"Bearer {token('fuzzer', name='Fuzzer', ttl=86400)}"}
CHECKS = [not_a_server_error, response_schema_conformance]
SEEDED = ["0", "a", "A", "-", "_", "abc"]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenApiSchema]:
    directory = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+aiosqlite:///{directory / 'collab.db'}"
    migrate(url)
    app = create_app(Settings(_env_file=None, database_url=url, jwt_secret=SECRET))
    try:
        loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
        with asgi.get_client(app) as client:  # type: ignore[arg-type]
            for doc_id in SEEDED:
                response = client.post(
                    "/documents", json={"id": doc_id, "content": "seed text 😀"}, headers=HEADERS
                )
                assert response.status_code == 201, response.text
        yield loaded
    finally:
        # Ends the app's lifespan, which schemathesis would otherwise leave to interpreter exit.
        asgi.shutdown_lifespans()


def fuzz(api_schema: OpenApiSchema, mode: GenerationMode, examples: int) -> list[str]:
    """Runs ``examples`` generated cases against every operation; returns the operations run."""
    ran = []
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not (
            list(operation.iter_parameters()) or operation.body.items
        ):
            continue  # nothing in the request that could be made invalid

        @given(case=operation.as_strategy(mode, headers=HEADERS))
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate(headers=HEADERS, checks=CHECKS)

        run()
        ran.append(operation.label)
    return ran


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_rest_api_has_no_server_errors_and_conforms(
    api_schema: OpenApiSchema, mode: GenerationMode
) -> None:
    ran = fuzz(api_schema, mode, examples=12)
    assert "POST /documents/{doc_id}/ops" in ran
    assert len(ran) >= (12 if mode is GenerationMode.POSITIVE else 9), ran


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_rest_api_has_no_server_errors_and_conforms_long(
    api_schema: OpenApiSchema, mode: GenerationMode
) -> None:
    fuzz(api_schema, mode, examples=300)
