"""JobSpec.loras: checked at submit (library names only, engine bounds), stored in the spec, run by the worker."""

import io

import numpy as np
import pytest
from jobkit import tiny, user_with_key
from lorakit import write_random_lora
from PIL import Image

from egaku.errors import InvalidRequestError, ModelNotFoundError
from egaku.jobs import JobStatus
from egaku.jobs.validate import check_spec


@pytest.fixture
def lora(engine, egaku_home):
    return write_random_lora(engine.load("tiny"), egaku_home / "models" / "loras" / "a.safetensors", seed=1)


@pytest.mark.parametrize("loras, prompt, error, match", [
    ([("nope", 1.0)], "x", ModelNotFoundError, "no LoRA named 'nope' in the library \\(have: a\\)"),
    ([("../loras/a.safetensors", 1.0)], "x", ModelNotFoundError, "no LoRA named"),
    ([], "x <lora:nope:1>", ModelNotFoundError, "no LoRA named 'nope'"),
    ([("a", 11.0)], "x", InvalidRequestError, "between -10 and 10"),
    ([("a", float("nan"))], "x", InvalidRequestError, "between -10 and 10"),
    ([("a", float("inf"))], "x", InvalidRequestError, "between -10 and 10"),
    ([("a", True)], "x", InvalidRequestError, "between -10 and 10"),
    ([("a", "1")], "x", InvalidRequestError, "between -10 and 10"),
    ([("a", 1.0)] * 17, "x", InvalidRequestError, "at most 16 LoRAs"),
    ([("a",)], "x", InvalidRequestError, "pair"),
    ([("", 1.0)], "x", InvalidRequestError, "name must be text"),
    ("a", "x", InvalidRequestError, "must be a list"),
    ([], "x <lora:a:12>", InvalidRequestError, "between -10 and 10"),
])
def test_bad_loras_are_refused_at_submit(make_service, lora, loras, prompt, error, match):
    service = make_service(workers=0)
    principal, _ = user_with_key(service, "alice", credits=10)
    with pytest.raises(error, match=match):
        service.submit(principal, tiny(prompt, loras=loras))
    assert service.list_jobs(principal) == [] and service.balance(principal) == 10


def pixels(service, principal, view) -> np.ndarray:
    png = service.image_png(principal, view.images[0].id)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_a_job_with_loras_runs_and_records_them(make_service, lora):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    service.start()
    view = service.submit(principal, tiny("a red circle", seed=5, loras=[("A", 0.5)]))  # found case-insensitively
    assert view.spec["loras"] == [{"name": "a", "weight": 0.5}]
    done = service.wait(principal, view.id, timeout=60)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.images[0].infotext.startswith("a red circle <lora:a:0.5>\n")
    plain = service.wait(principal, service.submit(principal, tiny("a red circle", seed=5)).id, timeout=60)
    assert plain.spec["loras"] == [] and plain.images[0].infotext.startswith("a red circle\n")
    assert np.abs(pixels(service, principal, done) - pixels(service, principal, plain)).max() > 10


def test_a_job_stored_before_loras_existed_still_runs(make_service):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    checked = check_spec(tiny("a red circle"), engine=service.engine, settings=service.settings)
    spec = {k: v for k, v in checked.spec.items() if k != "loras"}  # the spec JSON of an older release
    job = service.store.create_job(user_id=principal.user_id, api_key_id=None, spec=spec, cost=1, charge=True, n=1,
                                   batch_key=checked.batch_key, webhook_url=None, source="native")
    service.start()
    done = service.wait(principal, job.id, timeout=60)
    assert done.status is JobStatus.SUCCEEDED, done.error
