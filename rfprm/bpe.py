"""A small byte-level BPE trainer, for the built-in world's tiny vocabulary.

It learns merges the way tiktoken applies them (lowest rank first), so the result is an
ordinary `rfprm.tokenizer.Tokenizer` that saves as a Hugging Face `tokenizer.json` and encodes
identically in HF `tokenizers` (tested). Qwen's split pattern keeps digits as single tokens,
which is what lets a tiny model learn to add digit by digit.
"""
from __future__ import annotations

import collections
import heapq
import re
import unicodedata

import regex  # tiktoken's own dependency; the standard `re` has no \p{L}

from .errors import RfprmError
from .tokenizer import QWEN2_PATTERN, Tokenizer, _bpe


def train_bpe(texts: list[str], vocab_size: int, special_tokens: list[str],
              pattern: str = QWEN2_PATTERN) -> Tokenizer:
    """Learn a byte-level BPE of `vocab_size` ids (256 bytes + merges + specials) from `texts`.

    Byte b has id b; each merge takes the next id; `special_tokens` follow the last merge. At
    each step the most frequent adjacent pair inside the split chunks is merged (ties: the pair
    of lowest ids). Counting runs over unique chunks weighted by frequency, and only chunks that
    hold the chosen pair are updated. After a merge a chunk is re-run with tiktoken's rule
    (`_bpe`), so the learned ranks encode the training text exactly as training saw it. Stops
    early when no pair is left."""
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise RfprmError("train_bpe: texts must be a list of str")
    if len(set(special_tokens)) != len(special_tokens) or not all(special_tokens):
        raise RfprmError("train_bpe: special tokens must be distinct non-empty strings, "
                         f"got {special_tokens}")
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise RfprmError(f"train_bpe: vocab_size {vocab_size} is smaller than 256 bytes + "
                         f"{len(special_tokens)} special tokens")
    split = regex.compile(pattern)
    # Special-token text in the corpus is cut out first, as encode() would, so it is not learned.
    specials_re = re.compile("|".join(map(re.escape, sorted(special_tokens, key=len, reverse=True))))
    pieces = [p for t in texts for p in (specials_re.split(t) if special_tokens else [t])]
    chunk_counts = collections.Counter(
        c for p in pieces for c in split.findall(unicodedata.normalize("NFC", p)))
    words = [[bytes([b]) for b in c.encode("utf-8")] for c in chunk_counts]
    freqs = list(chunk_counts.values())
    ranks = {bytes([b]): b for b in range(256)}
    pair_counts: collections.Counter = collections.Counter()
    where = collections.defaultdict(set)  # pair -> indices of words that (may) contain it
    for w, parts in enumerate(words):
        for pair in zip(parts, parts[1:]):
            pair_counts[pair] += freqs[w]
            where[pair].add(w)
    # A max-heap of (count, pair), lowest ids first on ties. Counts change after every merge; we
    # push the new count and skip popped entries whose count is no longer the pair's count.
    heap = [(-n, ranks[a], ranks[b], a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)
    for _ in range(n_merges):
        while heap and pair_counts.get((heap[0][3], heap[0][4])) != -heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            break
        a, b = heapq.heappop(heap)[3:]
        ranks[a + b] = len(ranks)
        changed = set()
        for w in where.pop((a, b)):
            old = words[w]
            new = _bpe(ranks, list(old))
            if len(new) == len(old):
                continue  # a stale index: the pair left this word earlier
            for pair in zip(old, old[1:]):
                pair_counts[pair] -= freqs[w]
                changed.add(pair)
            for pair in zip(new, new[1:]):
                pair_counts[pair] += freqs[w]
                changed.add(pair)
                where[pair].add(w)
            words[w] = new
        for pair in changed:
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], ranks[pair[0]], ranks[pair[1]], *pair))
            else:
                del pair_counts[pair]
    specials = {t: len(ranks) + k for k, t in enumerate(special_tokens)}
    return Tokenizer(ranks, specials, pattern, "NFC", where="train_bpe")
