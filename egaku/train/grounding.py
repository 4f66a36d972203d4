"""Token grounding: a training-time loss that puts each object phrase's cross-attention on its object.

TokenCompose (Wang et al. 2024, "TokenCompose: Text-to-Image Diffusion with Token-level
Supervision") adds, beside the denoising loss, a loss on the UNet's cross-attention maps: the
attention of an object's words should fall inside that object's segmentation mask. The shapes world
gives exact masks for free. This is what position and attribute binding need: to satisfy it the UNet
must place "red circle on the left" where the circle is, which the denoising loss alone teaches
slowly (a small object is a small part of it).

Only training changes. The processors here compute the same attention as diffusers' own, keep the
probabilities for the loss, and are removed before export; the model stays a standard UNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from egaku.world.captions import Span


class AttentionRecorder:
    """Swaps every cross-attention (`attn2`) processor of a diffusers UNet for one that records its
    probabilities in `self.maps`, as (B, heads, H*W, tokens). Use as a context manager."""

    def __init__(self, unet):
        self.unet = unet
        self.maps: list[torch.Tensor] = []
        self._saved = None

    def __enter__(self) -> "AttentionRecorder":
        self._saved = dict(self.unet.attn_processors)
        self.unet.set_attn_processor(
            {name: _RecordingProcessor(self) if ".attn2." in name else proc for name, proc in self._saved.items()}
        )
        return self

    def __exit__(self, *exc) -> None:
        self.unet.set_attn_processor(self._saved)
        self.maps = []


class _RecordingProcessor:
    """diffusers' plain attention (softmax(QK^T / sqrt(d)) V), keeping the probabilities."""

    def __init__(self, recorder: AttentionRecorder):
        self.recorder = recorder

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("token grounding supports the standard SD cross-attention only")
        residual = hidden_states  # (B, N, C)
        context = encoder_hidden_states if encoder_hidden_states is not None else hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*heads, N, d)
        k = attn.head_to_batch_dim(attn.to_k(context))  # (B*heads, T, d)
        v = attn.head_to_batch_dim(attn.to_v(context))
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], hidden_states.shape[0])
        probs = attn.get_attention_scores(q, k, mask)  # (B*heads, N, T)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, v))))
        if attn.residual_connection:
            out = out + residual
        self.recorder.maps.append(probs.unflatten(0, (-1, attn.heads)))  # (B, heads, N, T)
        return out / attn.rescale_output_factor


def phrase_token_masks(tokenizer, texts: list[str], spans: list[list[Span]], max_phrases: int) -> torch.Tensor:
    """(B, max_phrases, 77) 1 where a token overlaps phrase k of caption b (padded exactly as
    `egaku.train.data.tokenize`); all zero for a missing phrase or an empty caption."""
    enc = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_offsets_mapping=True)
    out = torch.zeros(len(texts), max_phrases, tokenizer.model_max_length)
    for b, (offsets, phrases) in enumerate(zip(enc["offset_mapping"], spans)):
        for k, (start, end, _) in enumerate(phrases[:max_phrases]):
            for j, (a, z) in enumerate(offsets):
                if z > a and a < end and z > start:  # (0, 0): special and padding tokens
                    out[b, k, j] = 1.0
    return out


def phrase_region_masks(object_masks: list[torch.Tensor], spans: list[list[Span]], max_phrases: int) -> torch.Tensor:
    """(B, max_phrases, 128, 128): for phrase k of example b, the union of its objects' masks.
    `object_masks[b]` is (n_objects, 128, 128), as `egaku.world.render.object_masks`."""
    side = object_masks[0].shape[-1]
    out = torch.zeros(len(spans), max_phrases, side, side)
    for b, (masks, phrases) in enumerate(zip(object_masks, spans)):
        for k, (_, _, objs) in enumerate(phrases[:max_phrases]):
            out[b, k] = masks[list(objs)].amax(dim=0)
    return out


def touched_cells(masks: torch.Tensor, side: int) -> torch.Tensor:
    """(..., side, side) 1 where a cell of a `side` x `side` grid over the (..., S, S) pixel masks
    holds any of the mask (coverage above 5%, to skip antialiasing fringes), else 0."""
    return F.adaptive_max_pool2d(masks, side).gt(0.05).float()


def attention_on_phrases(probs: torch.Tensor, token_masks: torch.Tensor, regions: torch.Tensor):
    """For one layer's (B, heads, H*W, T) attention: (share, inside), where share (B, K) is the part
    of phrase k's attention (mean over heads) that falls inside its mask, and inside (B, K, H*W) is
    that mask on the layer's grid. token_masks (B, K, T); regions (B, K, S, S) pixel masks."""
    side = int(probs.shape[2] ** 0.5)
    attn = probs.float().mean(1)  # (B, N, T)
    per_phrase = torch.einsum("bnt,bkt->bkn", attn, token_masks)  # (B, K, N)
    inside = touched_cells(regions, side).flatten(2)  # (B, K, N)
    return (per_phrase * inside).sum(-1) / per_phrase.sum(-1).clamp(min=1e-8), inside


def grounding_loss(maps: list[torch.Tensor], token_masks: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss, (1 - attention inside the mask / all attention)^2, for every
    phrase and every recorded layer, averaged. maps: (B, heads, H*W, T) each; token_masks
    (B, K, T); regions (B, K, S, S) pixel masks, max-pooled to each layer's resolution."""
    valid = (token_masks.sum(-1) > 0).float()  # (B, K)
    if not maps or valid.sum() == 0:
        return token_masks.new_zeros(())
    losses = []
    for probs in maps:
        inside, _ = attention_on_phrases(probs, token_masks, regions)  # (B, K)
        losses.append((((1 - inside) ** 2) * valid).sum() / valid.sum())
    return torch.stack(losses).mean()
