"""A1111-compatible prompts: emphasis weights, BREAK, prompt editing, alternation, LoRA tags, and
the weighted, chunked CLIP conditioning built from them for SD 1.x, SD 2.x and SDXL.

    encoder = PromptEncoder(bundle)
    schedule = encoder.encode_schedule("a [cat:dog:0.5], (sunset:1.2)", steps=20)
    cond = conditioning_at(schedule, step)          # step counted from 0
    cond, uncond = match_length(cond, encoder.encode(negative), encoder.empty())
"""

from egaku.engine.prompts.chunks import MAX_TOKENS_PER_CHUNK, PromptChunk, describe_prompt, split_into_chunks
from egaku.engine.prompts.encoder import Conditioning, PromptEncoder, conditioning_at, match_length, match_lengths
from egaku.engine.prompts.parser import extract_lora_tags, parse_prompt_attention
from egaku.engine.prompts.schedule import get_prompt_schedule

__all__ = [
    "MAX_TOKENS_PER_CHUNK",
    "Conditioning",
    "PromptChunk",
    "PromptEncoder",
    "conditioning_at",
    "describe_prompt",
    "extract_lora_tags",
    "get_prompt_schedule",
    "match_length",
    "match_lengths",
    "parse_prompt_attention",
    "split_into_chunks",
]
