"""Fuzz every route of the OpenAPI spec with schemathesis against the live server: never a 5xx.

The key is of a user with 0 credits, so a valid generation request stops at 402 before any work
(and the server has no workers). Each operation gets a few derandomized cases that fit the schema
and a few that break it. (schemathesis' pytest plugin does not run under this pytest, so the
operations are looped over here with hypothesis directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from liveserver import start_live
from schemathesis.generation import GenerationMode

EXAMPLES = 5


@pytest.fixture(scope="module")
def fuzz_live(tmp_path_factory):
    live, server = start_live(tmp_path_factory.mktemp("fuzz"), workers=0, credits={"zero": 0})
    yield live
    server.stop()


def _fuzz(operation, mode: GenerationMode, headers: dict, failures: list[str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call(headers=headers, timeout=30)
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {case.as_curl_command(headers)}\n  {response.text[:300]}")

    try:
        run()
    except Unsatisfiable:
        pass  # no case of this mode exists for the operation (e.g. a path parameter is any string)


def test_no_route_answers_5xx(fuzz_live):
    schema = schemathesis.openapi.from_url(f"{fuzz_live.url}/openapi.json", timeout=60)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30  # every wire format is in the spec
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not (operation.body or operation.query or operation.path_parameters):
                continue  # nothing to break
            _fuzz(operation, mode, fuzz_live.headers("zero"), failures)
    assert not failures, "\n".join(failures[:20])


def test_the_spec_documents_every_route(fuzz_live):
    import requests

    spec = requests.get(f"{fuzz_live.url}/openapi.json", timeout=30).json()
    operations = [(m.upper(), p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]
    for method, path, op in operations:
        assert op.get("summary"), (method, path)
        assert any(code.startswith("2") for code in op["responses"]), (method, path)
    paths = set(spec["paths"])
    for expected in ("/api/v1/jobs", "/api/v1/jobs/{job_id}/events", "/v1/generation/{engine_id}/text-to-image",
                     "/v1/generation/{engine_id}/image-to-image/masking", "/v1/images/edits", "/sdapi/v1/txt2img",
                     "/sdapi/v1/progress", "/sdapi/v1/options"):
        assert expected in paths
    job = spec["components"]["schemas"]["JobOut"]["properties"]
    assert {"id", "status", "position", "progress", "cost", "params", "images"} <= set(job)
