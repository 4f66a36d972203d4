"""Textual inversion (Gal et al. 2022): a new word whose vectors are the only thing that trains.

The word's placeholder tokens are added to the tokenizer(s) exactly as the engine adds them for a
loaded embedding (egaku.engine.extras), and their vectors come from the same embedding hook, so
what trains here is what generation uses. Saved in A1111's format, file stem = the word.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from egaku.engine.extras import add_placeholder_tokens, placeholders, rewrite_embeddings, token_vectors
from egaku.errors import InvalidRequestError
from egaku.models.bundle import ModelBundle
from egaku.models.embeddings import FIRST, SECOND, Embedding, write_embedding

# diffusers' textual_inversion.py templates (imagenet_templates_small), for images without captions
TEMPLATES = ("a photo of a {}", "a rendering of a {}", "a picture of a {}", "a close-up photo of a {}",
             "a good photo of a {}", "a bright photo of the {}", "a cropped photo of the {}", "an image of a {}")
TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.-]{0,63}$")


class EmbeddingAdapter:
    """Vectors for `cfg.token` in every text encoder, initialised from `cfg.init_word`."""

    trains_text = True  # gradients flow through the text encoder to the vectors

    def __init__(self, cfg):
        self.cfg = cfg
        self.token = cfg.token or cfg.output_name
        if not TOKEN_RE.match(self.token or ""):
            raise InvalidRequestError(f"the embedding's word {self.token!r} must be letters, digits, '_', '+', '.' or '-'")
        self.n = cfg.num_vectors
        self.tables: dict[str, tuple[object, list[int]]] = {}  # key -> (TokenVectors, rows)

    def prepare(self, bundle: ModelBundle) -> None:
        pairs = [(FIRST, bundle.tokenizer, bundle.text_encoder)]
        if bundle.text_encoder_2 is not None:
            pairs.append((SECOND, bundle.tokenizer_2, bundle.text_encoder_2))
        for key, tokenizer, encoder in pairs:
            ids = add_placeholder_tokens(tokenizer, placeholders(self.token, self.n))
            tv = token_vectors(encoder)
            rows = [i - tv.vocab for i in ids]
            weight = encoder.get_input_embeddings().weight
            init_ids = tokenizer(self.cfg.init_word, add_special_tokens=False).input_ids or [tokenizer.unk_token_id]
            start = weight[init_ids].detach().float().mean(dim=0)  # (D,)
            table = torch.zeros(max(rows) + 1, weight.shape[1], device=weight.device)
            table[rows] = start
            tv.table = torch.nn.Parameter(table)
            self.tables[key] = (tv, rows)

    def param_groups(self) -> list[dict]:
        return [{"params": [tv.table for tv, _ in self.tables.values()], "lr": self.cfg.lr}]

    def vectors(self) -> dict[str, torch.Tensor]:
        return {key: tv.table[rows].detach().float().cpu() for key, (tv, rows) in self.tables.items()}  # (N, D)

    def state(self) -> dict[str, torch.Tensor]:
        return {key: tv.table.detach().clone() for key, (tv, _) in self.tables.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for key, (tv, _) in self.tables.items():
            with torch.no_grad():
                tv.table.copy_(state[key])

    def caption(self, text: str, rng) -> str:
        """The caption with the word made of its placeholders; the word is put first when missing."""
        word = " ".join(placeholders(self.token, self.n))
        if not text:
            return rng.choice(TEMPLATES).format(word)
        if re.search(r"(?<![\w-])" + re.escape(self.token) + r"(?![\w-])", text, re.IGNORECASE):
            return rewrite_embeddings(text, {self.token: self.n})
        return f"{word}, {text}"

    def save(self, bundle: ModelBundle, out: Path, meta: dict) -> Path:
        ext = "pt" if self.cfg.embedding_format == "pt" else "safetensors"
        emb = Embedding(self.token, self.vectors(), step=meta["steps"])
        return write_embedding(out / f"{self.token}.{ext}", emb, bundle.sha256, bundle.name or "builtin")
