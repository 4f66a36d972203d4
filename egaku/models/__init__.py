"""Models: any SD checkpoint a user has -> loaded diffusers components (see loader.load_model),
architecture detection from tensors, LDM single-file export, and the local library."""

from egaku.models.bundle import ModelBundle, ModelFamily
from egaku.models.export import export_single_file
from egaku.models.library import ModelInfo
from egaku.models.loader import load_model

__all__ = ["ModelBundle", "ModelFamily", "ModelInfo", "export_single_file", "load_model"]
