"""egaku's generation engine: a GenerationRequest in, images and their A1111 parameters out.

    from egaku.engine import Engine, GenerationRequest
    result = Engine().generate(GenerationRequest("a red circle", steps=20, seed=1))

Names are imported on first use (PEP 562), so `import egaku.engine.metadata` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Engine": "pipeline",
    "GenerationResult": "pipeline",
    "GenerationCancelled": "pipeline",
    "ProgressEvent": "pipeline",
    "GenerationRequest": "request",
    "SamplerInfo": "samplers",
    "SamplerName": "samplers",
    "list_samplers": "samplers",
    "get_sampler": "samplers",
    "resolve_device": "devices",
    "resolve_dtype": "devices",
    "ModelCache": "cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'egaku.engine' has no attribute '{name}'")
    return getattr(importlib.import_module(f"egaku.engine.{module}"), name)
