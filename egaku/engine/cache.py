"""Loaded models kept in memory: least-recently-used within a byte budget; pinned entries stay.

Loading a model past the budget first evicts the least recently used ones (drop the references,
collect garbage, release the CUDA cache and, on glibc, give freed heap pages back to the OS) so that
switching between two models many times does not grow the process.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from egaku.models.bundle import ModelBundle


def bundle_bytes(bundle: ModelBundle) -> int:
    """Bytes held by a bundle's weights and buffers (parameters shared between modules count once)."""
    seen: set[int] = set()
    total = 0
    for module in (bundle.unet, bundle.vae, bundle.text_encoder, bundle.text_encoder_2):
        if module is None:
            continue
        for t in (*module.parameters(), *module.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def release_memory() -> None:
    """Free what dropped references held: Python garbage, the CUDA caching allocator, glibc's heap."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@dataclass
class CacheEntry:
    bundle: ModelBundle
    size: int  # bytes
    pinned: bool = False  # registered with add_bundle: never evicted


class ModelCache:
    """An LRU of loaded models keyed by resolved name, within `budget` bytes in all.

    Pinned models count against the budget but are never evicted. A model larger than what is left
    is still loaded, after every unpinned model has been evicted to make room.
    """

    def __init__(self, budget: int):
        self.budget = int(budget)
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.RLock()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        """Cached names, least recently used first."""
        return list(self._entries)

    @property
    def used(self) -> int:
        return sum(e.size for e in self._entries.values())

    def pin(self, key: str, bundle: ModelBundle) -> None:
        """Keep `bundle` under `key` for good: it is never evicted (but does use the budget)."""
        with self._lock:
            self._entries[key] = CacheEntry(bundle, bundle_bytes(bundle), pinned=True)
            self._entries.move_to_end(key)

    def get(self, key: str) -> ModelBundle | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry.bundle

    def get_or_load(
        self, key: str, loader: Callable[[], ModelBundle], size_hint: int | None = None
    ) -> ModelBundle:
        """The cached model under `key`, or load it, evicting LRU entries before (by `size_hint`) and after."""
        with self._lock:
            bundle = self.get(key)
            if bundle is not None:
                return bundle
            if size_hint:
                self._evict(room_for=size_hint)
            bundle = loader()
            size = bundle_bytes(bundle)
            self._evict(room_for=size)
            self._entries[key] = CacheEntry(bundle, size)
            return bundle

    def evict(self, key: str) -> bool:
        """Drop `key` (even if pinned); True if it was cached."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return False
        del entry
        release_memory()
        return True

    def clear(self) -> None:
        """Drop every unpinned model."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if not e.pinned]:
                del self._entries[key]
        release_memory()

    def _evict(self, room_for: int) -> None:
        """Drop least recently used unpinned entries until `room_for` more bytes fit in the budget."""
        dropped = False
        while self.used + room_for > self.budget:
            victim = next((k for k, e in self._entries.items() if not e.pinned), None)
            if victim is None:
                break
            del self._entries[victim]
            dropped = True
        if dropped:
            release_memory()
