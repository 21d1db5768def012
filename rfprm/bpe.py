"""Qwen's byte-level BPE on top of tiktoken: the Tokenizer (ChatML, HF-compatible saving) and a
small trainer.

`Tokenizer` wraps a `tiktoken.Encoding` with NFC normalisation, special tokens, ChatML and
saving as HF's `tokenizer.json`; `rfprm.tokenizer.load_tokenizer(dir)` builds one from a
checkpoint's files, and `train_bpe` learns one from text (the built-in world's vocabulary).
Notable choices:

- Bytes <-> printable characters. Byte-level BPE works on the UTF-8 bytes of the text, so any
  string can be encoded and nothing is ever "unknown". But HF's vocab files are JSON and store
  each token as a *string*, and raw bytes such as a space, a newline or an incomplete piece of a
  UTF-8 character do not make readable (or even valid) strings. GPT-2 therefore maps each of the
  256 byte values to one printable Unicode character: the 188 bytes that already print as
  themselves in Latin-1 (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) keep their own character, and the other
  68 (control characters, space, DEL, no-break space, soft hyphen) are given the characters
  U+0100, U+0101, ... in byte order. So a space is stored as `Ġ` (U+0120), a newline as `Ċ`
  (U+010A), and the token " world" appears in vocab.json as `Ġworld`. tiktoken keeps the raw
  bytes instead, so loading undoes the mapping (`_unicode_to_bytes`) and saving redoes it.
- Ranks are ids. tiktoken's BPE starts from single bytes and keeps merging the adjacent pair
  whose concatenation has the lowest rank; the rank is also the token id. HF's BPE merges the
  pair that comes first in `merges`. The two agree when ids were handed out in merge order (as in
  GPT-2 and Qwen: id = 256 + merge index) *and* every token is built by tiktoken's rule from a
  pair that `merges` lists for it. `_check_merges` verifies both for every merge on load and
  raises when a vocabulary breaks them; `save` rebuilds `merges` from the ranks with the same rule.
- The split regex (pre-tokenizer) cuts text into chunks that BPE never merges across. Qwen2's,
  alternative by alternative (the first that matches at a position wins):
    `(?i:'s|'t|'re|'ve|'m|'ll|'d)`  English contractions, any case ("'S", "'ll").
    `[^\\r\\n\\p{L}\\p{N}]?\\p{L}+`  a run of letters plus at most one leading character that is
                                     not a letter, digit or newline: " world", "_init", "(x".
    `\\p{N}`                         ONE digit: numbers are split digit by digit (GPT-2 had
                                     `\\p{N}+`), so "2024" is always 4 tokens -- good for arithmetic.
    ` ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*`  punctuation/symbol runs, optional leading space, swallowing
                                     the newlines that follow: " ==", ".\\n\\n", " 😀".
    `\\s*[\\r\\n]+`                   blank space that ends in newlines, as one chunk: "  \\n\\n".
    `\\s+(?!\\S)`                     a whitespace run minus its last character when a word follows,
                                     so that space goes with the word: "a   b" -> "a", "  ", " b".
    `\\s+`                           whatever whitespace is left (at the end of the text).
  tokenizer.json's own Split regex is used when present; Qwen2's otherwise.
- tiktoken has no normaliser; Qwen's tokenizer.json has NFC. Like HF, we first cut the text at
  added tokens (leftmost, longest first), then NFC each remaining piece, so a combining mark
  right after `<|im_end|>` cannot merge into its `>` and destroy the special token.
- Added tokens (specials) are read from the checkpoint, never from a built-in list: `added_tokens`
  in tokenizer.json plus `added_tokens_decoder` in tokenizer_config.json. Only a `*.tiktoken`
  file, which holds no specials, falls back to Qwen's own list when there is no
  tokenizer_config.json: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, then `<|extra_0|>` ..
  `<|extra_204|>`, numbered from the first id after the ranks (what Qwen's tokenization_qwen.py
  does). HF flags on added tokens (lstrip, rstrip, single_word) are not applied; Qwen sets none.
- `train_bpe` is a small trainer for the built-in world. It learns merges the way tiktoken
  applies them (lowest rank first) and keeps every word in the state that tiktoken itself would
  produce, so what it learns is by construction consistent with the rules above, saves as an
  HF `tokenizer.json` and encodes identically in HF `tokenizers` (tested). Qwen's split pattern
  keeps digits as single tokens, which is what lets a tiny model learn to add digit by digit.
"""
from __future__ import annotations

import collections
import heapq
import json
import re
import unicodedata
from pathlib import Path

import regex  # tiktoken's own dependency; the standard `re` has no \p{L}
import tiktoken

from .errors import RfprmError, atomic_file

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# What a bare ByteLevel(use_regex=True) pre-tokenizer splits with (GPT-2 style files).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Appended after the ranks of a *.tiktoken file that comes without tokenizer_config.json.
QWEN_TIKTOKEN_SPECIALS = (["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
                          + [f"<|extra_{i}|>" for i in range(205)])
ENDOFTEXT, IM_START, IM_END, STEP_TAG = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"
CHAT_ROLES = ("system", "user", "assistant")
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
                   "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
NORMALIZATIONS = ("NFC", "NFD", "NFKC", "NFKD")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (see the module docstring)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, n = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def _unicode_to_bytes(token: str, where: str) -> bytes:
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError as e:
        raise RfprmError(f"{where}: token {token!r} is not byte-level (character "
                         f"U+{ord(e.args[0]):04X} stands for no byte); expected a byte-level BPE "
                         "vocabulary like Qwen's") from None


def _bytes_to_unicode_str(token: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in token)


def _bpe(ranks: dict[bytes, int], parts: list[bytes], max_rank: int | None = None) -> list[bytes]:
    """tiktoken's merge rule in Python: merge the lowest-ranked adjacent pair (leftmost on ties)
    until none is in `ranks` (only ranks below `max_rank`, if given)."""
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is None or (max_rank is not None and r >= max_rank):
                continue
            if best_rank is None or r < best_rank:
                best_rank, best_i = r, i
        if best_rank is None:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def _merge_of(ranks: dict[bytes, int], token: bytes) -> list[bytes]:
    """The parts tiktoken holds just before it forms `token`: a pair, unless the token is
    unreachable (then it is never produced by merging)."""
    return _bpe(ranks, [bytes([b]) for b in token], max_rank=ranks[token])


class Tokenizer:
    """A tiktoken Encoding plus NFC, added tokens read from the checkpoint, and ChatML."""

    def __init__(self, mergeable_ranks: dict[bytes, int], special_tokens: dict[str, int],
                 pattern: str = QWEN2_PATTERN, normalization: str | None = "NFC",
                 non_special: frozenset[str] = frozenset(), chat_template: str | None = None,
                 where: str = "tokenizer"):
        missing = [b for b in range(256) if bytes([b]) not in mergeable_ranks]
        if missing:
            raise RfprmError(f"{where}: not a byte-level vocabulary: byte 0x{missing[0]:02x} has no "
                             "token (all 256 single bytes must be tokens)")
        ids = collections.Counter(mergeable_ranks.values())
        ids.update(special_tokens.values())
        dup = next((i for i, n in ids.items() if n > 1), None)
        if dup is not None:
            raise RfprmError(f"{where}: duplicate id {dup}: two tokens share it; expected one id each")
        if normalization not in (None, *NORMALIZATIONS):
            raise RfprmError(f"{where}: unknown normalization {normalization!r}; "
                             f"expected one of {NORMALIZATIONS} or None")
        self.mergeable_ranks = dict(mergeable_ranks)
        self.special_tokens = dict(sorted(special_tokens.items(), key=lambda kv: kv[1]))
        self.pattern, self.normalization = pattern, normalization
        self.non_special = frozenset(non_special)  # added tokens HF marks "special": false
        self.chat_template = chat_template
        self.encoding = tiktoken.Encoding("rfprm", pat_str=pattern,
                                          mergeable_ranks=self.mergeable_ranks,
                                          special_tokens=self.special_tokens)
        self.vocab_size = max(ids) + 1  # ids in gaps (if any) are never produced
        # Added tokens are cut out of the text before anything else; longest first so that of two
        # tokens starting at the same place the longer wins, as in HF.
        specials = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = (re.compile("(" + "|".join(map(re.escape, specials)) + ")")
                            if specials else None)
        self.eos_id = self.special_tokens.get(ENDOFTEXT)
        self.pad_id = self.eos_id
        self.im_end_id = self.special_tokens.get(IM_END)
        self.step_id = self.special_tokens.get(STEP_TAG)
        self.stop_ids = [i for i in (self.im_end_id, self.eos_id) if i is not None]

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, ranks={len(self.mergeable_ranks)}, "
                f"specials={len(self.special_tokens)})")

    def token_to_id(self, text: str) -> int | None:
        """Id of an added token (or of a single ordinary token spelling `text`), else None."""
        if text in self.special_tokens:
            return self.special_tokens[text]
        return self.mergeable_ranks.get(text.encode("utf-8"))

    def encode(self, text: str) -> list[int]:
        """Text -> ids. Added tokens written in the text become their ids; the rest is NFC'd."""
        if not isinstance(text, str):
            raise RfprmError(f"encode: expected a str, got {type(text).__name__}")
        pieces = self._special_re.split(text) if self._special_re else [text]
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:  # re.split puts the captured separators (the added tokens) at odd positions
                ids.append(self.special_tokens[piece])
            elif piece:
                if self.normalization:
                    piece = unicodedata.normalize(self.normalization, piece)
                ids.extend(self.encoding.encode_ordinary(piece))
        return ids

    def decode(self, ids) -> str:
        """Ids -> text: the tokens' bytes joined, then UTF-8 with errors="replace" (as HF)."""
        try:
            ids = [int(i) for i in ids]
        except (TypeError, ValueError):
            raise RfprmError(f"decode: expected a sequence of integer ids, got {ids!r:.80}") from None
        try:
            return self.encoding.decode(ids, errors="replace")
        except (KeyError, OverflowError, ValueError):
            bad = next(i for i in ids if not self._is_id(i))
            raise RfprmError(f"decode: token id {bad} is not in the vocabulary "
                             f"(ids 0..{self.vocab_size - 1})") from None

    def _is_id(self, i: int) -> bool:
        try:
            self.encoding.decode_single_token_bytes(i)
            return True
        except (KeyError, OverflowError, ValueError):
            return False

    def render_chat(self, messages, add_generation_prompt: bool = False,
                    default_system: str | None = None) -> str:
        """ChatML text as Qwen2.5's chat template renders these messages.

        Qwen2.5's template injects a system message when the first message is not one ("You are
        Qwen, created by Alibaba Cloud. You are a helpful assistant." for the Instruct models).
        We inject nothing unless `default_system` is given, so the ids follow the messages alone.
        """
        if IM_START not in self.special_tokens or IM_END not in self.special_tokens:
            raise RfprmError("chat: this tokenizer has no <|im_start|>/<|im_end|> tokens; "
                             "expected a ChatML (Qwen) vocabulary")
        if not isinstance(messages, (list, tuple)):
            raise RfprmError(f"chat: messages must be a list of dicts, got {type(messages).__name__}")
        for n, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise RfprmError(f"chat: message {n} must be a dict with 'role' and 'content', "
                                 f"got {m!r:.80}")
            if m["role"] not in CHAT_ROLES:
                raise RfprmError(f"chat: message {n} has role {m['role']!r}; expected one of "
                                 + "/".join(CHAT_ROLES))
            if not isinstance(m["content"], str):
                raise RfprmError(f"chat: message {n} content must be a str, "
                                 f"got {type(m['content']).__name__}")
        if default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": default_system}, *messages]
        text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
        return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")

    def chat(self, messages, add_generation_prompt: bool = False,
             default_system: str | None = None) -> list[int]:
        """Ids of `render_chat(...)`."""
        return self.encode(self.render_chat(messages, add_generation_prompt, default_system))

    def merges(self) -> list[tuple[bytes, bytes]]:
        """HF's merge list rebuilt from the ranks: each token's pair under tiktoken's rule."""
        out = []
        for token, rank in sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1]):
            if len(token) > 1:
                parts = _merge_of(self.mergeable_ranks, token)
                if len(parts) != 2:
                    raise RfprmError(f"cannot save: token {token!r} (id {rank}) is never formed by "
                                     "merging, so HF's BPE cannot express this vocabulary")
                out.append((parts[0], parts[1]))
        return out

    def save(self, directory) -> None:
        """Write tokenizer.json + tokenizer_config.json that HF `tokenizers`/`transformers` load.

        The config names `<|endoftext|>` as eos and pad (what `eos_id`/`pad_id` mean here) and
        keeps the checkpoint's chat template, or writes the plain ChatML one `chat()` renders."""
        directory = Path(directory)
        added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": t not in self.non_special}
                 for t, i in self.special_tokens.items()]
        by_rank = sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])
        vocab = {_bytes_to_unicode_str(t): r for t, r in by_rank}
        # HF gives added tokens that are not in the model vocab the next free ids in file order,
        # whatever their "id" says. Specials with other ids (a gap, or ids among the ranks) keep
        # theirs only when they sit in the model vocab too, so put them there in that case.
        n = len(by_rank)
        if [r for _, r in by_rank] != list(range(n)) or \
                list(self.special_tokens.values()) != list(range(n, n + len(self.special_tokens))):
            vocab.update(self.special_tokens)
        # "a b" strings: a byte-level token never contains a space (a space is written "Ġ")
        merges = [f"{_bytes_to_unicode_str(a)} {_bytes_to_unicode_str(b)}" for a, b in self.merges()]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                      "use_regex": False}
        split = {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated",
                 "invert": False}
        data = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": self.normalization} if self.normalization else None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte_level]},
            "post_processor": None, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                      "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": merges},
        }
        has_chatml = IM_START in self.special_tokens and IM_END in self.special_tokens
        eos = ENDOFTEXT if self.eos_id is not None else None
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"}
                                     for a in added},
            "bos_token": None, "unk_token": None, "eos_token": eos, "pad_token": eos,
            "clean_up_tokenization_spaces": False, "errors": "replace", "split_special_tokens": False,
            "model_max_length": 131072,
            "chat_template": self.chat_template or (CHATML_TEMPLATE if has_chatml else None),
        }
        for name, obj in (("tokenizer.json", data), ("tokenizer_config.json", config)):
            with atomic_file(directory / name) as f:
                json.dump(obj, f, ensure_ascii=False, indent=1)
                f.write("\n")


# ----------------------------------------------------------------------------- training

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
