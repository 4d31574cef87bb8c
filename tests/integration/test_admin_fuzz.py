"""Schema-driven fuzz of the admin API: every operation of the router's own ``/openapi.json``.

Schemathesis generates valid (positive) and invalid (negative) requests for each operation, sent with
the bearer token against a live router in front of two simulated replicas. No answer may be a 5xx,
and every error must be an OpenAI-style body. The number of examples is bounded so the run stays
in seconds; replica URLs are kept on loopback (a refused port) so the fuzz never leaves the machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.core.result import Err, Ok

from pcache.testing.http import expect_status
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet

EXAMPLES_PER_OPERATION = 10
REFUSED = "http://127.0.0.1:9"
REAL = ("r1", "r2")  # nothing listens on the discard port: connect fails at once


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with SimFleet(replicas=2) as sim:
        state = tmp_path_factory.mktemp("fuzzed-router")
        with RouterProcess(
            replicas=sim.urls, state_dir=state, health={"timeout_s": 0.5}, prewarm={"timeout_s": 5.0}
        ) as process:
            yield process


def _keep_on_loopback(case: Any) -> None:
    """Replica URLs the fuzzer invents would send health checks anywhere: point them at loopback."""
    body = case.body
    if isinstance(body, dict) and str(body.get("url")).startswith(("http://", "https://")):
        body["url"] = REFUSED


def _cases(operation: Any, mode: GenerationMode) -> SearchStrategy[Any]:
    """Generated requests; for ``{name}`` paths, half of them name a replica that exists."""
    strategies = [operation.as_strategy(generation_mode=mode)]
    if "{name}" in operation.path and "/replicas/" in operation.path:
        strategies += [operation.as_strategy(generation_mode=mode, path_parameters={"name": n}) for n in REAL]
    return st.one_of(strategies)


def _is_openai_error(response: Any) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("message"), str) and "type" in error


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_admin_operation_answers_5xx_to_generated_requests(
    router: RouterProcess, mode: GenerationMode
) -> None:
    document = httpx.get(f"{router.admin_url}/openapi.json", timeout=5).json()
    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    assert not [r.err() for r in results if isinstance(r, Err)], "the OpenAPI document has broken operations"
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) >= 14, [op.label for op in operations]
    headers = {"authorization": f"Bearer {router.token}"}
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    skipped: list[str] = []

    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=_cases(operation, mode))
        def fuzz(case: Any) -> None:
            _keep_on_loopback(case)
            response = case.call(base_url=router.admin_url, headers=headers, timeout=10)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.body!r:.200}: {response.text:.300}"
                )
            elif response.status_code >= 400 and not _is_openai_error(response):
                failures.append(
                    f"{case.method} {case.formatted_path}: non-OpenAI error body {response.text:.200}"
                )

        try:
            fuzz()
        except Unsatisfiable:  # no invalid request exists (no inputs, or only free-form strings)
            assert mode is GenerationMode.NEGATIVE, operation.label
            skipped.append(operation.label)

    assert failures == [], "\n".join(failures[:20])
    assert sum(statuses.values()) >= len(operations) - len(skipped)  # every operation was exercised
    print(f"{mode.value}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    # The router is still alive and serving after the fuzz.
    expect_status(httpx.get(f"{router.admin_url}/api/v1/status", timeout=5), 200)
