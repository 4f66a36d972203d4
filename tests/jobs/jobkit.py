"""Helpers shared by the job service tests (imported as a plain module: tests/jobs is on sys.path)."""

from egaku.jobs import JobSpec


def tiny(prompt="a red circle", **kw) -> JobSpec:
    """A fast job on the tiny model (64x64)."""
    kw.setdefault("steps", 2)
    return JobSpec(prompt, model="tiny", **kw)


def user_with_key(service, name, credits=0):
    """(principal, plaintext key) of a new user holding `credits`."""
    service.add_user(name)
    if credits:
        service.grant_credits(name, credits)
    _, key = service.create_key(name)
    return service.authenticate(key), key
