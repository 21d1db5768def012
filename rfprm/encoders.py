"""Text encoders Φ for the step labels: alignment and coherence compare steps by the cosine of
their embeddings (ReasonFlux-PRM leaves Φ open: "any pretrained sentence encoder").

Every encoder has `embed(texts: list[str]) -> FloatTensor [n, d]` with L2-normalised rows, so
a cosine is a dot product. Notable choices:

- `NgramEncoder` (the built-in world's Φ, no weights): hashed character n-grams.
    * Each text is lowercased and its runs of whitespace become one space; digits are kept as
      they are. In arithmetic the digits carry the content: `7 + 5 = 12` and `7 + 5 = 13`
      share every n-gram except those that touch the final digit, so they are similar but
      not identical.
    * Every n-gram of each length in `ngram` (default 2, 3 and 4 characters, taken from the
      text padded with one space at each end so the first and last characters form n-grams
      too) is hashed into one of `dim` buckets with `zlib.crc32`. crc32 is stable across
      processes and machines; Python's `hash` of a str is salted per process
      (PYTHONHASHSEED) and would give different labels on every run.
    * A bucket holds the n-gram's count (no sign trick), so all entries are >= 0 and every
      cosine is in [0, 1].
    * An empty text embeds as the zero vector: its cosine with anything is 0.
- `ModelEncoder` (for real data): the mean of a causal LM's final-normed hidden states over
  the text's tokens, batched and padded, without gradients. Mean-pooled decoder states tend
  to share a large common direction, so their cosines sit high and close together; the labels
  stay monotone in them, but compare numbers only between runs with the same encoder.
- `build_encoder(name)` picks Φ by name: "ngram" (the default), or a causal-LM checkpoint
  directory or shipped name ("tiny-policy", "tiny-base", a Qwen2.5 directory) for a
  `ModelEncoder` on that model's own hidden states, whose cosines carry what the model has
  learnt about the text rather than its spelling.
- `CachedEncoder` remembers each text's row; labelling draws the same negative steps again and
  again, and the alignment and coherence passes embed the same steps.
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import RfprmError


def _check_texts(texts, who: str) -> list[str]:
    if not isinstance(texts, (list, tuple)):
        raise RfprmError(f"{who}.embed: expected a list of str, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RfprmError(f"{who}.embed: texts[{i}] is {type(t).__name__}; expected str")
    return list(texts)


class NgramEncoder:
    """Hashed character n-gram counts, L2-normalised (see the module docstring)."""

    def __init__(self, dim: int = 1024, ngram: tuple[int, ...] = (2, 3, 4)):
        ngram = tuple(ngram)
        if int(dim) < 1:
            raise RfprmError(f"NgramEncoder: dim must be >= 1, got {dim}")
        if not ngram or any(int(n) < 1 for n in ngram):
            raise RfprmError(f"NgramEncoder: ngram must be a non-empty tuple of lengths >= 1, got {ngram}")
        self.dim, self.ngram = int(dim), tuple(int(n) for n in ngram)

    def __repr__(self) -> str:
        return f"NgramEncoder(dim={self.dim}, ngram={self.ngram})"

    @staticmethod
    def normalize(text: str) -> str:
        """Lowercase, whitespace runs -> one space, one space of padding at each end."""
        body = " ".join(text.lower().split())
        return f" {body} " if body else ""

    def buckets(self, text: str) -> list[int]:
        """The bucket of every n-gram of `text` (with repeats: a bucket's count is its weight)."""
        s = self.normalize(text)
        out = []
        for n in self.ngram:
            for i in range(len(s) - n + 1):
                # the length is part of the key, so "12" as a 2-gram and as part of a 3-gram differ
                out.append(zlib.crc32(f"{n}\x00{s[i:i + n]}".encode("utf-8")) % self.dim)
        return out

    def embed(self, texts: list[str]) -> torch.Tensor:
        texts = _check_texts(texts, "NgramEncoder")
        counts = torch.zeros(len(texts), self.dim)                     # (n, d)
        for row, text in enumerate(texts):
            idx = self.buckets(text)
            if idx:
                counts[row].index_add_(0, torch.tensor(idx), torch.ones(len(idx)))
        return F.normalize(counts, dim=-1)  # zero rows stay zero (normalize divides by max(norm, eps))


class ModelEncoder:
    """Mean-pooled final hidden states of a causal LM (rfprm's Qwen2ForCausalLM or its backbone).

    `max_length` truncates each text's tokens (steps are short; a runaway one should not blow
    the batch up). Texts are sorted by length before batching so padding stays small."""

    def __init__(self, model, tok, batch_size: int = 32, max_length: int = 512, progress: bool = False):
        self.backbone = getattr(model, "model", model)  # Qwen2ForCausalLM.model, or a Qwen2Model
        if not hasattr(self.backbone, "embed_tokens"):
            raise RfprmError("ModelEncoder: expected an rfprm Qwen2ForCausalLM or Qwen2Model, "
                             f"got {type(model).__name__}")
        if int(batch_size) < 1 or int(max_length) < 1:
            raise RfprmError(f"ModelEncoder: batch_size and max_length must be >= 1, got "
                             f"{batch_size} and {max_length}")
        self.tok, self.batch_size, self.max_length = tok, int(batch_size), int(max_length)
        self.max_length = min(self.max_length, self.backbone.cfg.max_position_embeddings)
        self.progress = progress
        self.pad_id = tok.pad_id if tok.pad_id is not None else 0

    def __repr__(self) -> str:
        return f"ModelEncoder({type(self.backbone).__name__}, max_length={self.max_length})"

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        texts = _check_texts(texts, "ModelEncoder")
        ids = [self.tok.encode(t)[: self.max_length] for t in texts]
        weight = self.backbone.embed_tokens.weight
        out = torch.zeros(len(texts), weight.shape[1])                 # (n, H) float32 on CPU
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        order = [i for i in order if ids[i]]                           # empty text -> zero row
        starts = range(0, len(order), self.batch_size)
        for s in tqdm(starts, disable=not self.progress, desc="embed", leave=False):
            rows = order[s:s + self.batch_size]
            T = max(len(ids[i]) for i in rows)
            batch = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(rows), T, dtype=torch.bool)
            for b, i in enumerate(rows):                               # right padding
                batch[b, :len(ids[i])] = torch.tensor(ids[i])
                mask[b, :len(ids[i])] = True
            batch, mask = batch.to(weight.device), mask.to(weight.device)
            h = self.backbone(batch, key_mask=mask).float()            # (b, T, H)
            m = mask[..., None].float()
            pooled = (h * m).sum(1) / m.sum(1)                         # (b, H) mean over real tokens
            out[rows] = pooled.cpu()
        return F.normalize(out, dim=-1)


class CachedEncoder:
    """Wraps an encoder; each distinct text is embedded once."""

    def __init__(self, encoder):
        if isinstance(encoder, CachedEncoder):
            encoder = encoder.encoder
        if not callable(getattr(encoder, "embed", None)):
            raise RfprmError(f"expected an encoder with .embed(texts), got {type(encoder).__name__}")
        self.encoder = encoder
        self.rows: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {len(self.rows)} cached)"

    def embed(self, texts: list[str]) -> torch.Tensor:
        texts = _check_texts(texts, "CachedEncoder")
        new = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if new:
            emb = self.encoder.embed(new)
            if emb.ndim != 2 or emb.shape[0] != len(new):
                raise RfprmError(f"{self.encoder!r}.embed returned shape {tuple(emb.shape)} for "
                                 f"{len(new)} texts; expected ({len(new)}, d)")
            self.rows.update(zip(new, emb.float()))
        if not texts:
            return torch.zeros(0, 0)
        return torch.stack([self.rows[t] for t in texts])


ENCODER_NAMES = ("ngram", "<model dir or shipped name>")


def build_encoder(name: str = "ngram", device: str = "cpu", batch_size: int = 64):
    """Φ by name: "ngram" -> NgramEncoder(); anything else is a causal-LM checkpoint (a
    directory or a shipped name such as "tiny-policy") -> ModelEncoder over its mean-pooled
    final hidden states. RfprmError when the name is neither."""
    if not isinstance(name, str) or not name.strip():
        raise RfprmError(f"encoder name must be a non-empty str, got {name!r}: expected "
                         f"{' or '.join(ENCODER_NAMES)}")
    if name == "ngram":
        return NgramEncoder()
    from .checkpoint import load_model      # only a model encoder needs a checkpoint
    from .tokenizer import load_tokenizer
    model = load_model(name, device=device).eval()
    return ModelEncoder(model, load_tokenizer(name), batch_size=batch_size)
