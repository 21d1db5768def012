"""Batched sampling with a preallocated KV cache.

Notable choices:
- Ragged prompts are left-padded into one batch; a key mask hides the padding and positions
  count only real tokens, so each row computes exactly what it would alone.
- One prefill, then one token per step through `model.decode_logits` (the lean one-token path
  of model.py). `num_samples=n` prefills each prompt once and copies its cache n times
  (Best-of-N and GRPO draw n answers per prompt).
- Rows stop independently at any of `stop_ids` (default: the model's end-of-turn ids from its
  config / generation_config.json). Finished rows are dropped from the batch, so long-tailed
  batches do not pay for rows that are done. Stops are tracked on the device and read back
  every step on the CPU (where that costs nothing) but every few steps on an accelerator,
  where a read-back would stall the queue of launched kernels; a row's output ends at its
  first stop token either way.
- The decode loop does as little per step as it can: greedy is an argmax over the logits as
  they come (no float32 copy, no softmax unless log-probabilities are asked for), the RoPE
  matrices of many steps are built at once, and new tokens are written to the output in one
  scatter per batch change rather than one per step.
- Sampling never draws an embedding row beyond the tokenizer's vocabulary (Qwen pads its
  151,665 ids to 151,936 rows): `vocab_limit`, by default `model.vocab_limit` when the loader
  found a tokenizer beside the weights.
- `return_logprobs=True` also returns each sampled token's log-probability under the
  temperature-scaled distribution *before* top-k/top-p truncation: that is what an RL trainer
  recomputes for its ratio, so the two agree (truncation would bias it).
- `generate_ref` is the plain reference: one prompt at a time, no cache, full recompute each
  step. The tests check that both give the same tokens.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .errors import RfprmError


def _check_args(model, prompts, max_new_tokens, temperature, top_p, top_k, num_samples):
    if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
        raise RfprmError("generate: prompts must be a non-empty list of token-id lists")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise RfprmError(f"generate: prompts[{i}] is empty (every prompt needs at least one token)")
    if int(max_new_tokens) < 1:
        raise RfprmError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0.0 < float(top_p) <= 1.0:
        raise RfprmError(f"generate: top_p must be in (0, 1], got {top_p}")
    if float(temperature) < 0:
        raise RfprmError(f"generate: temperature must be >= 0, got {temperature}")
    if int(top_k) < 0:
        raise RfprmError(f"generate: top_k must be >= 0 (0 = off), got {top_k}")
    if int(num_samples) < 1:
        raise RfprmError(f"generate: num_samples must be >= 1, got {num_samples}")
    context = model.cfg.max_position_embeddings
    longest = max(len(p) for p in prompts)
    if longest >= context:
        raise RfprmError(f"generate: a prompt has {longest} tokens; the model's context is {context}")
    vocab = model.cfg.vocab_size
    for i, p in enumerate(prompts):
        bad = [t for t in p if not 0 <= t < vocab]
        if bad:
            raise RfprmError(f"generate: prompts[{i}] has token id {bad[0]} outside [0, {vocab})")


def sample(logits, temperature: float, top_p: float, top_k: int, generator, want_logprobs: bool = True):
    """logits (B, V) float32 -> (tokens (B,), log-probs (B,) under logits/temperature, or None)."""
    if temperature == 0.0:
        tokens = logits.argmax(-1)
        if not want_logprobs:
            return tokens, None
        return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0]
    logits = logits / temperature
    filtered = logits
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) >= top_p  # keep the smallest prefix reaching p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        filtered = torch.full_like(filtered, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(filtered, -1)
    tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
    if not want_logprobs:
        return tokens, None
    return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0]


def _stop_check_interval(device) -> int:
    """Decode steps between read-backs of which rows have stopped: every step on the CPU, where
    it is free; every 8 elsewhere, where it would stall the queue of launched kernels."""
    return 1 if device.type == "cpu" else 8


def _rotation_block(batch: int, head_dim: int) -> int:
    """Decode steps whose RoPE matrices are built together: built one step at a time they cost
    ~7% of a tiny model's step; capped at ~1M elements (4 MB in float32)."""
    return max(1, min(64, 2**20 // (batch * head_dim * head_dim)))


def default_stop_ids(model) -> list[int]:
    eos = model.cfg.eos_token_id
    ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    return ids + [i for i in getattr(model, "extra_stop_ids", []) if i not in ids]


@torch.inference_mode()
def generate(model, prompts, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
             top_k: int = 0, stop_ids=None, seed: int | None = None, num_samples: int = 1,
             vocab_limit: int | None = None, return_logprobs: bool = False, progress: bool = False):
    """Sample continuations of `prompts` (a list of token-id lists).

    Returns a list of new-token lists, num_samples per prompt, prompt-major (prompt i's samples
    are at [i*n, (i+1)*n)); each ends with its stop token if it stopped. With return_logprobs,
    returns (tokens, logprobs) with matching float lists."""
    _check_args(model, prompts, max_new_tokens, temperature, top_p, top_k, num_samples)
    device = model.device
    stop = torch.tensor(default_stop_ids(model) if stop_ids is None else list(stop_ids),
                        dtype=torch.long, device=device)
    vocab_limit = vocab_limit or getattr(model, "vocab_limit", None) or model.cfg.vocab_size
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))

    # ---- prefill: left-pad the prompts into one batch ----
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    B, Tp = len(prompts), int(lengths.max())
    max_new = min(int(max_new_tokens), model.cfg.max_position_embeddings - Tp)
    ids = torch.zeros(B, Tp, dtype=torch.long, device=device)
    key_mask = torch.zeros(B, Tp + max_new, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        ids[i, Tp - len(p):] = torch.tensor(p, dtype=torch.long)
        key_mask[i, Tp - len(p):] = True
    key_mask[:, Tp:] = True                                    # generated tokens are all real
    padded = bool((lengths != Tp).any())
    cache = model.new_cache(B, Tp + max_new)
    logits = model(ids, key_mask=key_mask[:, :Tp] if padded else None, cache=cache, last_only=True)
    logits = logits[:, -1]                                     # (B, V)
    if num_samples > 1:                                        # copy each prompt's cache n times
        cache = cache.repeat_interleave(num_samples)
        logits = logits.repeat_interleave(num_samples, 0)
        key_mask = key_mask.repeat_interleave(num_samples, 0)
        lengths = lengths.repeat_interleave(num_samples)
        B *= num_samples
    logits = logits[:, :vocab_limit]

    # ---- decode one token at a time; `rows` maps batch slots back to output rows ----
    rope, dtype = model.model.rope, model.dtype
    block = _rotation_block(B, model.cfg.head_dim)
    rope.ensure(Tp + max_new + block, device)
    weights = model.model.decode_weights()                     # views + norm scales, checked once
    greedy = temperature == 0.0 and not return_logprobs
    check_every = _stop_check_interval(device)
    rows = torch.arange(B, device=device)
    running = torch.ones(B, dtype=torch.bool, device=device)  # not yet stopped
    out_tokens = torch.zeros(B, max_new, dtype=torch.long, device=device)
    out_logprobs = torch.zeros(B, max_new, dtype=torch.float32, device=device)
    new_tokens, new_logprobs, first = [], [], 0               # steps first.. not yet in out_*

    def flush(upto: int):
        """Write the pending steps into the output rows (one scatter, not one per step)."""
        nonlocal new_tokens, new_logprobs, first
        out_tokens[rows, first:upto] = torch.stack(new_tokens, 1)
        if new_logprobs:
            out_logprobs[rows, first:upto] = torch.stack(new_logprobs, 1)
        new_tokens, new_logprobs, first = [], [], upto

    for step in tqdm(range(max_new), disable=not progress, desc="generate", leave=False):
        if step % block == 0:  # RoPE matrices of the next steps' positions (real tokens before them)
            offsets = torch.arange(step, step + block, device=device)
            rotations = rope.rotation(lengths[:, None] + offsets, dtype)   # (B, block, hs, hs)
        if greedy:
            tokens = logits.argmax(-1)
        else:
            tokens, logprobs = sample(logits.float(), temperature, top_p, top_k, generator, return_logprobs)
            if return_logprobs:
                new_logprobs.append(logprobs)
        new_tokens.append(tokens)
        if len(stop):
            running &= ~torch.isin(tokens, stop)
        if step == max_new - 1:
            break
        if len(stop) and step % check_every == check_every - 1 and not bool(running.all()):
            flush(step + 1)
            if not running.any():
                break
            # drop stopped rows from the batch (a copy of the cache rows, worth it for long tails)
            rows, tokens, lengths = rows[running], tokens[running], lengths[running]
            key_mask = key_mask[running]
            cache.k, cache.v = cache.k[:, running], cache.v[:, running]
            rotations = rotations[running]
            running = running[running]
        S = cache.length + 1
        logits = model.decode_logits(tokens, rotations[:, step % block],
                                     key_mask[:, None, None, :S] if padded else None,
                                     cache, vocab_limit, weights)            # (B, vocab_limit)
    if new_tokens:
        flush(first + len(new_tokens))

    # each row ends at its first stop token (a stopped row may run a few steps more off the CPU)
    is_stop = torch.isin(out_tokens, stop)                     # (B, max_new)
    n_new = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, max_new).tolist()
    tokens_out = [out_tokens[i, : n_new[i]].tolist() for i in range(out_tokens.shape[0])]
    if return_logprobs:
        return tokens_out, [out_logprobs[i, : n_new[i]].tolist() for i in range(out_tokens.shape[0])]
    return tokens_out


def chat_complete(model, tok, user_prompts: list[str], max_new_tokens: int = 256, temperature: float = 0.0,
                  top_p: float = 1.0, num_samples: int = 1, seed: int = 0, batch_size: int = 64,
                  progress: bool = False) -> list[str]:
    """Answer each user message (ChatML, generation prompt added); -> decoded completions without
    their stop token, num_samples per prompt (prompt-major). Batches hold ~batch_size rows."""
    ids = [tok.chat([{"role": "user", "content": p}], add_generation_prompt=True) for p in user_prompts]
    per_batch = max(1, batch_size // num_samples)
    outs = []
    for i in tqdm(range(0, len(ids), per_batch), disable=not progress, desc="sample", leave=False):
        outs += generate(model, ids[i:i + per_batch], max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, num_samples=num_samples, seed=seed + i, stop_ids=tok.stop_ids)
    stops = set(tok.stop_ids)
    return [tok.decode([t for t in o if t not in stops]) for o in outs]


@torch.inference_mode()
def generate_ref(model, prompts, max_new_tokens: int = 64, stop_ids=None, vocab_limit=None):
    """The plain reference: greedy, one prompt at a time, no KV cache."""
    stop = set(default_stop_ids(model) if stop_ids is None else stop_ids)
    vocab_limit = vocab_limit or getattr(model, "vocab_limit", None) or model.cfg.vocab_size
    outs = []
    for p in prompts:
        seq, new = list(p), []
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([seq], device=model.device))[0, -1, :vocab_limit]
            token = int(logits.argmax())
            seq.append(token)
            new.append(token)
            if token in stop:
                break
        outs.append(new)
    return outs
