"""LyCORIS layers in kohya-named files, as A1111 (extensions-builtin/Lora) and ComfyUI apply them.

- LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, optional `hada_t1`/`hada_t2` for
  CP-decomposed convolutions): delta = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · alpha / r, the Hadamard
  product of two low-rank matrices (Hyeon-Woo et al. 2022, "FedPara"; Yeh et al. 2024, "LyCORIS").
- LoKr (`lokr_w1` or `lokr_w1_a`/`lokr_w1_b`, `lokr_w2` or `lokr_w2_a`/`lokr_w2_b`, optional
  `lokr_t2`): delta = w1 ⊗ w2 (Kronecker product) · alpha / r, r the rank of a factorised side
  (scale 1 when neither side is factorised or there is no alpha), as in LyCORIS.
- Full (`diff`, optional `diff_b`; LyCORIS `algo=full`): the whole difference of the weight (and
  of the bias), added as it is, with no rank and no alpha.
Each layer has the same face as `LoraLayer`: rank, alpha, scale, in_features (of a linear layer),
delta_shape and delta(shape, device, base) (`base`, the module's weight, matters only to DoRA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOHA_PARTS = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha"}
FULL_PARTS = {"diff", "diff_b", "alpha"}
LOKR_PARTS = {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha"}


def _f32(t: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if t is None else t.to(device=device, dtype=torch.float32)


def cp_weight(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A CP-decomposed (Tucker) kernel back to a weight: core t (r, r, kh, kw), a (r, out), b (r, in)
    -> (out, in, kh, kw)."""
    return torch.einsum("i j k l, j n, i o -> o n k l", t, b, a)


def fit_delta(d: torch.Tensor, shape) -> torch.Tensor:
    """`d` reshaped to a module's weight `shape`; ValueError if it holds another number of values."""
    if d.numel() != math.prod(shape):
        raise ValueError(f"delta {tuple(d.shape)} does not fit weight {tuple(shape)}")
    return d.reshape(shape)


@dataclass
class LohaLayer:
    """LoHa: w1_a (out, r), w1_b (r, in*kh*kw); with CP cores t1/t2 (r, r, kh, kw), w*_a (r, out), w*_b (r, in)."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    alpha: float | None = None
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return self.w1_b.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else float(self.alpha) / self.rank

    @property
    def in_features(self) -> int:
        return self.w1_b.shape[1]

    @property
    def delta_shape(self) -> tuple[int, ...]:
        if self.t1 is None:
            return self.w1_a.shape[0], self.w1_b.shape[1]
        return self.w1_a.shape[1], self.w1_b.shape[1], *self.t1.shape[2:]

    def delta(self, shape, device=None, base=None) -> torch.Tensor:
        w1a, w1b, w2a, w2b, t1, t2 = (_f32(t, device) for t in (self.w1_a, self.w1_b, self.w2_a, self.w2_b, self.t1, self.t2))
        w1 = cp_weight(t1, w1a, w1b) if t1 is not None else w1a @ w1b.flatten(1)
        w2 = cp_weight(t2, w2a, w2b) if t2 is not None else w2a @ w2b.flatten(1)
        return fit_delta(w1 * w2 * self.scale, shape)


@dataclass
class LokrLayer:
    """LoKr: w1 (a, b) or w1_a @ w1_b; w2 (c, d[, kh, kw]) or w2_a @ w2_b, or the CP kernel
    t2 (r, r, kh, kw) with w2_a (r, c), w2_b (r, d). The delta is kron(w1, w2): (a*c, b*d[, kh, kw])."""

    w1: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    alpha: float | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    @property
    def rank(self) -> int | None:
        """The rank of a factorised side (what alpha is divided by); None when neither is factorised."""
        side = self.w1_b if self.w1_b is not None else self.w2_b
        return None if side is None else side.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None or self.rank is None else float(self.alpha) / self.rank

    @property
    def in_features(self) -> int:
        w1_in = self.w1.shape[1] if self.w1 is not None else self.w1_b.shape[1]
        w2_in = self.w2.shape[1] if self.w2 is not None else self.w2_b.shape[1]
        return w1_in * w2_in

    @property
    def delta_shape(self) -> tuple[int, ...]:
        a, b = self.w1.shape if self.w1 is not None else (self.w1_a.shape[0], self.w1_b.shape[1])
        if self.w2 is not None:
            c, d, *kernel = self.w2.shape
        elif self.t2 is not None:
            c, d, kernel = self.w2_a.shape[1], self.w2_b.shape[1], list(self.t2.shape[2:])
        else:
            c, d, kernel = self.w2_a.shape[0], self.w2_b.shape[1], []
        return a * c, b * d, *kernel

    def delta(self, shape, device=None, base=None) -> torch.Tensor:
        w1 = _f32(self.w1, device) if self.w1 is not None else _f32(self.w1_a, device) @ _f32(self.w1_b, device)
        if self.w2 is not None:
            w2 = _f32(self.w2, device)
        elif self.t2 is not None:
            w2 = cp_weight(_f32(self.t2, device), _f32(self.w2_a, device), _f32(self.w2_b, device))
        else:
            w2 = _f32(self.w2_a, device) @ _f32(self.w2_b, device).flatten(1)  # a conv's (c, d*kh*kw)
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]  # kron over (out, in); the kernel comes from w2 alone
        return fit_delta(torch.kron(w1, w2) * self.scale, shape)


@dataclass
class FullLayer:
    """LyCORIS full: `diff` has the module weight's own shape; `diff_b`, if any, the bias's."""

    diff: torch.Tensor
    diff_b: torch.Tensor | None = None
    alpha = None
    rank = None
    scale = 1.0

    @property
    def in_features(self) -> int:
        return self.diff.shape[1]

    @property
    def delta_shape(self) -> tuple[int, ...]:
        return tuple(self.diff.shape)

    def delta(self, shape, device=None, base=None) -> torch.Tensor:
        return fit_delta(_f32(self.diff, device), shape)

    def bias_delta(self, device=None) -> torch.Tensor | None:
        return _f32(self.diff_b, device)


def lycoris_layer(parts: dict[str, torch.Tensor], alpha: float | None) -> LohaLayer | LokrLayer | FullLayer | None:
    """The LoHa, LoKr or full layer made of one module's tensors (kohya part names, `alpha` already
    read from its `.alpha`), or None if they are none of these (or incomplete)."""
    keys = set(parts)
    if "diff" in keys and keys <= FULL_PARTS:
        return FullLayer(parts["diff"], parts.get("diff_b"))
    if keys <= LOHA_PARTS and {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= keys:
        return LohaLayer(parts["hada_w1_a"], parts["hada_w1_b"], parts["hada_w2_a"], parts["hada_w2_b"], alpha,
                         parts.get("hada_t1"), parts.get("hada_t2"))
    if keys <= LOKR_PARTS:
        has_w1 = "lokr_w1" in keys or {"lokr_w1_a", "lokr_w1_b"} <= keys
        has_w2 = "lokr_w2" in keys or {"lokr_w2_a", "lokr_w2_b"} <= keys
        if has_w1 and has_w2:
            return LokrLayer(parts.get("lokr_w1"), parts.get("lokr_w2"), alpha, parts.get("lokr_w1_a"),
                             parts.get("lokr_w1_b"), parts.get("lokr_w2_a"), parts.get("lokr_w2_b"), parts.get("lokr_t2"))
    return None
