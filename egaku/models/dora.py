"""DoRA layers: a LoRA, LoHa or LoKr delta whose merged weight is renormalised to a learned magnitude
(Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation").

    W' = m * (W + dW) / ||W + dW||        and at strength s:  W + s * (W' - W)

as A1111 (extensions-builtin/Lora) and ComfyUI merge them. Files store the magnitude m as
`dora_scale` (kohya sd-scripts, LyCORIS) or `lora_magnitude_vector` (peft). Its shape says which
norm: (out, 1[, 1, 1]) or (out,) is the norm of each output row (peft, LyCORIS `wd_on_out`);
(1, in[, 1, 1]) the norm of each input column (kohya, A1111).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DoraLayer:
    """A DoRA-decomposed layer: the inner low-rank layer (its delta dW) and the magnitude m."""

    inner: object  # LoraLayer | LohaLayer | LokrLayer
    magnitude: torch.Tensor

    rank = property(lambda self: self.inner.rank)
    alpha = property(lambda self: self.inner.alpha)
    scale = property(lambda self: self.inner.scale)
    in_features = property(lambda self: self.inner.in_features)
    delta_shape = property(lambda self: self.inner.delta_shape)

    def norm_axis(self, shape) -> int | None:
        """The weight axis the magnitude runs along: 0 (a norm per output row), 1 (per input
        column), or None when it fits neither of a weight of `shape`."""
        m = self.magnitude
        if m.numel() == shape[0] and (m.ndim == 1 or m.shape[0] == shape[0]):
            return 0
        return 1 if m.numel() == shape[1] else None

    def delta(self, shape, device=None, base: torch.Tensor | None = None) -> torch.Tensor:
        """W' - W for the module's weight `base` (DoRA's delta depends on the weight itself)."""
        axis = self.norm_axis(shape)
        if base is None or axis is None:
            raise ValueError(f"DoRA magnitude {tuple(self.magnitude.shape)} and weight {tuple(shape)}: no delta")
        w = base.to(device=device, dtype=torch.float32).reshape(shape)
        merged = w + self.inner.delta(shape, device)  # (out, in[, kh, kw])
        norm = torch.linalg.vector_norm(merged, dim=[d for d in range(merged.ndim) if d != axis], keepdim=True)
        view = [1] * merged.ndim
        view[axis] = -1
        m = self.magnitude.to(device=device, dtype=torch.float32).reshape(view)
        return merged * m / (norm + torch.finfo(torch.float32).eps) - w
