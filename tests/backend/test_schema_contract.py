"""Schema-driven testing of the HTTP API (schemathesis against the app in-process, seeded and bounded):
every response has a documented status code and content type and matches the published schema, no
5xx, and schema-invalid requests are rejected with a 4xx.

Left out on purpose: ``positive_data_acceptance``. The schema promises a well-formed request, not a
model on disk, a selector the model has, or a run within this backend's limits; those are documented
4xx (400/404/422/429), and the fuzz suite (test_fuzz.py) checks each of them is one clear line.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backend.server import make_app


def _app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    mp = pytest.MonkeyPatch()
    mp.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp / "precomputed"))
    mp.setenv("HYBRIDSCOPE_MAX_TOKENS", "16")  # anything that runs at all is tiny
    mp.setenv("HYBRIDSCOPE_MAX_DOCS", "1")
    mp.setenv("HYBRIDSCOPE_MAX_RUN_SECONDS", "5")
    for k in ("HYBRIDSCOPE_DATA_ROOTS", "HYBRIDSCOPE_HOSTED", "HYBRIDSCOPE_MODEL_ROOTS"):
        mp.delenv(k, raising=False)
    return make_app(str(tmp / "store"), extra_hosts=("testserver",)), mp


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    app, mp = _app(tmp_path_factory)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    mp.undo()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_keeps_its_published_contract(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
