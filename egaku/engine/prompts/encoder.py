"""Prompt text -> CLIP conditioning, weighted and chunked as AUTOMATIC1111 does (sd_hijack_clip.py).

Each 75-token chunk (see `chunks`) goes through the text encoder on its own; every token's vector
is multiplied by its weight, then the chunk is rescaled so its mean equals the unweighted mean
(A1111's emphasis mode "Original"); chunks are concatenated along the sequence: (1, 77*k, D).

Which hidden layer is used:
- SD 1.x / 2.x: clip_skip 1 -> last_hidden_state; clip_skip n > 1 -> hidden_states[-n] through the
  encoder's final_layer_norm (A1111's "Clip skip").
- SDXL: both encoders' penultimate layer, without the final norm (A1111, sgm and diffusers);
  clip_skip n > 2 goes deeper, hidden_states[-n] (as ComfyUI's CLIPSetLastLayer), so clip skip 1
  and 2 give the same result, as they do in A1111 and ComfyUI. The two are concatenated on the
  feature dim (768 + 1280 = 2048 on the real model); `pooled` is text_encoder_2's projected
  `text_embeds` of the first chunk, unweighted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from egaku.engine.prompts.chunks import (
    CHUNK_LENGTH,
    PromptChunk,
    chunk_input_ids,
    chunk_weights,
    split_into_chunks,
)
from egaku.engine.prompts.parser import extract_lora_tags, parse_prompt_attention
from egaku.engine.prompts.schedule import get_prompt_schedule
from egaku.errors import InvalidRequestError
from egaku.models.bundle import ModelBundle, ModelFamily


@dataclass(eq=False)  # tensors have no single truth value; compare .embeds with torch
class Conditioning:
    """A prompt as the UNet reads it. Shared with the encoder's cache: do not modify in place."""

    embeds: torch.Tensor  # (1, 77*k, D): k chunks of 77 token vectors
    pooled: torch.Tensor | None = None  # (1, D2): SDXL's pooled text embedding, else None

    @property
    def chunk_count(self) -> int:
        return self.embeds.shape[1] // CHUNK_LENGTH


class PromptEncoder:
    """Encodes prompts for one ModelBundle, caching each (prompt, clip_skip) it has encoded.

    The cache assumes the text encoders' weights do not change: call `clear_cache()` after
    applying or removing a LoRA on them (or use a fresh PromptEncoder).
    """

    def __init__(self, bundle: ModelBundle, cache_size: int = 64):
        self.bundle = bundle
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], Conditioning] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, text: str, clip_skip: int = 1) -> Conditioning:
        """Weights `(x:1.2)`, BREAK and 75-token chunks; no `[from:to:when]` or `<lora:>` handling."""
        key = (text, clip_skip)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        cond = self._encode(text, clip_skip)
        with self._lock:
            self._cache[key] = cond
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return cond

    def encode_schedule(self, text: str, steps: int, clip_skip: int = 1) -> list[tuple[int, Conditioning]]:
        """[(end_step, cond), ...] for `steps` steps: `<lora:...>` tags removed, then
        `[from:to:when]` and `[a|b]` resolved (see `get_prompt_schedule`); each distinct prompt
        is encoded once. Pick the entry for a step with `conditioning_at`."""
        prompt, _loras = extract_lora_tags(text)
        return [(end, self.encode(p, clip_skip)) for end, p in get_prompt_schedule(prompt, steps)]

    def empty(self, clip_skip: int = 1) -> Conditioning:
        """The empty prompt's conditioning (one chunk), as used to pad and for unconditional CFG."""
        return self.encode("", clip_skip)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _encode(self, text: str, clip_skip: int) -> Conditioning:
        b = self.bundle
        chunks = split_into_chunks(parse_prompt_attention(text), b.tokenizer)
        if b.family is ModelFamily.SDXL:
            layer = max(2, clip_skip)
            z1, _ = _encode_chunks(b.text_encoder, b.tokenizer, chunks, layer, final_norm=False)
            z2, pooled = _encode_chunks(b.text_encoder_2, b.tokenizer_2, chunks, layer, final_norm=False)
            return Conditioning(torch.cat([z1, z2], dim=-1), pooled)  # (1, 77k, D1+D2)
        z, _ = _encode_chunks(b.text_encoder, b.tokenizer, chunks, clip_skip, final_norm=True)
        return Conditioning(z, None)


def _encode_chunks(
    encoder, tokenizer, chunks: list[PromptChunk], layer: int, final_norm: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run all chunks as one batch: (1, 77k, D) from hidden layer -`layer`, and the pooled
    projection of the first chunk where the encoder has one.

    layer 1 with `final_norm` is last_hidden_state; deeper layers get the final norm applied
    when `final_norm` is set (A1111's clip skip), raw otherwise (SDXL).
    """
    n_layers = encoder.config.num_hidden_layers
    if not 1 <= layer <= n_layers:
        raise InvalidRequestError(f"clip skip {layer} is out of range: this text encoder has {n_layers} layers")
    device = _execution_device(encoder)
    ids = torch.tensor([chunk_input_ids(c, tokenizer) for c in chunks], device=device)  # (k, 77)
    weights = torch.tensor([chunk_weights(c) for c in chunks], device=device)  # (k, 77)
    need_hidden = layer > 1 or not final_norm
    with torch.no_grad():
        out = encoder(input_ids=ids, output_hidden_states=need_hidden)
        if layer == 1 and final_norm:
            z = out.last_hidden_state  # (k, 77, D)
        else:
            z = out.hidden_states[-layer]  # (k, 77, D)
            if final_norm:
                z = _final_layer_norm(encoder)(z)
        z = apply_emphasis(z, weights)
    pooled = out.text_embeds[:1] if getattr(out, "text_embeds", None) is not None else None  # (1, D2)
    return z.reshape(1, -1, z.shape[-1]), pooled  # (1, 77k, D)


def apply_emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111 emphasis "Original": scale each token's vector by its weight, then rescale each chunk
    so its mean over all tokens and features equals the unweighted mean.

    z: (k, 77, D) hidden states; weights: (k, 77). Computed in float32, returned in z's dtype.
    """
    if bool((weights == 1.0).all()):
        return z
    z32 = z.float()
    original_mean = z32.mean(dim=(1, 2), keepdim=True)  # (k, 1, 1)
    weighted = z32 * weights.to(z32)[..., None]  # (k, 77, D)
    new_mean = weighted.mean(dim=(1, 2), keepdim=True)  # (k, 1, 1)
    # A zero mean (all weights 0) cannot be restored: leave that chunk as weighted.
    scale = torch.where(new_mean.abs() > 1e-12, original_mean / new_mean, torch.ones_like(new_mean))
    return (weighted * scale).to(z.dtype)


def match_length(a: Conditioning, b: Conditioning, empty: Conditioning) -> tuple[Conditioning, Conditioning]:
    """Give `a` and `b` the same number of chunks so CFG can batch them (A1111's "pad prompt/negative
    prompt to be same length"): the shorter gets copies of the empty prompt's chunk appended."""
    a, b = match_lengths([a, b], empty)
    return a, b


def match_lengths(conds: list[Conditioning], empty: Conditioning) -> list[Conditioning]:
    """`match_length` for any number of conditionings: each is padded to the longest's chunk count."""
    longest = max(c.chunk_count for c in conds)
    pad_chunk = empty.embeds[:, :CHUNK_LENGTH]  # (1, 77, D)

    def padded(c: Conditioning) -> Conditioning:
        missing = longest - c.chunk_count
        if missing == 0:
            return c
        pad = pad_chunk.to(device=c.embeds.device, dtype=c.embeds.dtype).repeat(1, missing, 1)  # (1, 77m, D)
        return Conditioning(torch.cat([c.embeds, pad], dim=1), c.pooled)  # (1, 77(k+m), D)

    return [padded(c) for c in conds]


def conditioning_at(schedule: list[tuple[int, Conditioning]], step: int) -> Conditioning:
    """The conditioning for sampling step `step` (counted from 0): the first entry whose end step is
    greater than `step`, i.e. an entry ending at step 3 serves steps 0, 1, 2; past the end, the last.

    A1111 (reconstruct_cond_batch) tests `step <= end` with its 0-based step, using each edit one
    step longer than its number says; egaku follows the number as written.
    """
    if not schedule:
        raise ValueError("empty prompt schedule")
    for end, cond in schedule:
        if end > step:
            return cond
    return schedule[-1][1]


def _execution_device(module) -> torch.device:
    """Where inputs must go: accelerate's offload hook's device if there is one, else the weights'."""
    hook_device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if hook_device is not None:
        return torch.device(hook_device)
    return next(module.parameters()).device


def _final_layer_norm(encoder):
    """transformers 5 puts final_layer_norm on CLIPTextModel itself; older versions on .text_model."""
    norm = getattr(encoder, "final_layer_norm", None)
    return norm if norm is not None else encoder.text_model.final_layer_norm
