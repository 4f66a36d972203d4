"""Errors a user caused or can fix. Each message is one line; the CLI prints it without a traceback."""


class EgakuError(Exception):
    """Base class: anything raised as an EgakuError is shown to the user as `error: <message>`."""


class InvalidRequestError(EgakuError):
    """A generation request (or CLI argument) is out of range or inconsistent."""


class ModelNotFoundError(EgakuError):
    """No model, LoRA or embedding by that name or path."""


class ModelLoadError(EgakuError):
    """A model file is missing, truncated, corrupt or of an unsupported architecture."""


class UnsafeCheckpointError(ModelLoadError):
    """A .ckpt/.pt file would need arbitrary code to unpickle; we refuse it."""


class InvalidImageError(EgakuError):
    """An input image (init image, mask) is not a readable image, too large, or mismatched."""
