"""Weighted fragments -> CLIP token chunks of 75, as AUTOMATIC1111 builds them (sd_hijack_clip.py).

CLIP reads 77 tokens: BOS + 75 + EOS. A1111 lifts that limit by cutting a prompt into chunks of 75
tokens, encoding each on its own and concatenating the results along the sequence:
- fragments are tokenized without BOS/EOS and keep their weight per token;
- when a chunk is full and a comma lies within its last 20 tokens, the chunk ends after that comma
  and the tokens after it move to the next chunk (A1111's "comma padding backtrack", default 20);
- `BREAK` closes the current chunk early (the rest is padding);
- a textual-inversion embedding's vectors stay in one chunk: when they do not fit in what is left
  of the current one, it is closed and they start the next (A1111 does the same);
- each chunk is BOS + tokens + EOS, then padded to 77 with the tokenizer's pad id (SD 1.x pads
  with EOS 49407; SD 2.x and SDXL's OpenCLIP encoder with "!" = 0), all padding at weight 1.0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from egaku.engine.prompts.parser import extract_lora_tags, is_break, parse_prompt_attention
from egaku.engine.prompts.schedule import get_prompt_schedule

MAX_TOKENS_PER_CHUNK = 75  # CLIP's 77 positions less BOS and EOS
CHUNK_LENGTH = MAX_TOKENS_PER_CHUNK + 2
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack default
_PLACEHOLDER = re.compile(r"<(.+)-emb(\d+)>")


def placeholders(name: str, n: int) -> list[str]:
    """The tokens standing for an embedding's n vectors (never produced by ordinary text)."""
    return [f"<{name.lower()}-emb{i}>" for i in range(n)]


def _embedding_length(ids: list[int], pos: int, tokenizer) -> int:
    """How many vectors of one embedding start at ids[pos]: its run of placeholders, else 1."""
    first = _PLACEHOLDER.fullmatch(tokenizer.convert_ids_to_tokens(ids[pos]))
    if first is None or first.group(2) != "0":
        return 1
    names = placeholders(first.group(1), len(ids) - pos)
    run = 1
    while pos + run < len(ids) and tokenizer.convert_ids_to_tokens(ids[pos + run]) == names[run]:
        run += 1
    return run


@dataclass
class PromptChunk:
    """Up to 75 token ids of one chunk, without BOS/EOS/padding, and each token's weight."""

    tokens: list[int]
    weights: list[float]


def split_into_chunks(fragments: list[tuple[str, float]], tokenizer) -> list[PromptChunk]:
    """Tokenize weighted fragments (from `parse_prompt_attention`) into chunks of at most 75.

    An empty prompt is one empty chunk; a prompt ending with BREAK adds no empty chunk after it.
    """
    texts = [text for text, weight in fragments if not is_break((text, weight))]
    ids_per_text = iter(tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else [])
    first_added = tokenizer.vocab_size  # ids from here on are added tokens: embedding placeholders
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    if comma == tokenizer.unk_token_id:  # a vocabulary without the comma token: never backtrack
        comma = None

    chunks: list[PromptChunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1  # index in `tokens` of the chunk's last comma

    def close() -> None:
        nonlocal tokens, weights, last_comma
        chunks.append(PromptChunk(tokens, weights))
        tokens, weights, last_comma = [], [], -1

    for fragment in fragments:
        if is_break(fragment):
            close()
            continue
        ids = next(ids_per_text)
        for pos, token in enumerate(ids):
            if token == comma:
                last_comma = len(tokens)
            elif (
                len(tokens) == MAX_TOKENS_PER_CHUNK
                and last_comma >= 0
                and len(tokens) - last_comma <= COMMA_BACKTRACK
            ):
                # Move what follows the comma to the next chunk instead of cutting mid-phrase.
                cut = last_comma + 1
                tail_tokens, tail_weights = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                close()
                tokens, weights = tail_tokens, tail_weights
            if len(tokens) == MAX_TOKENS_PER_CHUNK:
                close()
            elif token >= first_added and len(tokens) + _embedding_length(ids, pos, tokenizer) > MAX_TOKENS_PER_CHUNK:
                close()  # an embedding's vectors are read together, never split over two chunks
            tokens.append(token)
            weights.append(fragment[1])
    if tokens or not chunks:
        close()
    return chunks


def chunk_input_ids(chunk: PromptChunk, tokenizer) -> list[int]:
    """BOS + tokens + EOS, padded to 77 with the tokenizer's own pad id."""
    ids = [tokenizer.bos_token_id, *chunk.tokens, tokenizer.eos_token_id]
    return ids + [tokenizer.pad_token_id] * (CHUNK_LENGTH - len(ids))


def chunk_weights(chunk: PromptChunk) -> list[float]:
    """One weight per position of `chunk_input_ids`: BOS, EOS and padding have weight 1.0."""
    ws = [1.0, *chunk.weights, 1.0]
    return ws + [1.0] * (CHUNK_LENGTH - len(ws))


def describe_prompt(text: str, steps: int, tokenizer) -> dict:
    """How egaku reads a prompt: what `egaku prompt "TEXT" --steps N --json` prints.

    Shape (weights rounded to 4 decimals; token strings as the CLIP tokenizer writes them, a
    trailing `</w>` ending a word; BOS/EOS/padding not listed)::

        {
          "schedule": [                       # one entry per distinct stretch of steps
            {"until_step": 10,                # used up to and including this step (from 1)
             "prompt": "a (cat:1.2)",         # after [from:to:when] / [a|b] are resolved
             "fragments": [["a ", 1.0], ["cat", 1.2]],   # BREAK shows as ["BREAK", -1.0]
             "chunks": [{"tokens": ["a</w>", "cat</w>"], "weights": [1.0, 1.2], "count": 2}],
             "token_count": 2}                # tokens over all chunks
          ],
          "loras": [{"name": "style", "weight": 0.8}],   # <lora:...> tags, removed from the prompt
          "max_tokens_per_chunk": 75
        }
    """
    prompt, loras = extract_lora_tags(text)
    schedule = []
    for end, scheduled in get_prompt_schedule(prompt, steps):
        fragments = parse_prompt_attention(scheduled)
        chunks = split_into_chunks(fragments, tokenizer)
        schedule.append(
            {
                "until_step": end,
                "prompt": scheduled,
                "fragments": [[t, round(w, 4)] for t, w in fragments],
                "chunks": [
                    {
                        "tokens": tokenizer.convert_ids_to_tokens(c.tokens),
                        "weights": [round(w, 4) for w in c.weights],
                        "count": len(c.tokens),
                    }
                    for c in chunks
                ],
                "token_count": sum(len(c.tokens) for c in chunks),
            }
        )
    return {
        "schedule": schedule,
        "loras": [{"name": name, "weight": weight} for name, weight in loras],
        "max_tokens_per_chunk": MAX_TOKENS_PER_CHUNK,
    }
