"""Supervised fine-tuning of a causal LM on chat examples, loss on the assistant part only.

Notable choices:
- An example is (prompt ids, completion ids): the prompt is the ChatML rendering up to
  `<|im_start|>assistant\n`, the completion is the assistant text plus `<|im_end|>`. Labels
  are -100 on the prompt and on padding, so only the completion is learned.
- Batches are right-padded (a causal model never looks right, so padding at the end needs no
  mask) and drawn by a seeded function of the step (`rfprm.trainer`'s resumable contract).
- The loss is `linear_cross_entropy` from `rfprm.kernels`: the final hidden states and the
  lm_head weight go in, and the [tokens, vocab] logits are never materialised.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from .errors import RfprmError
from .kernels import linear_cross_entropy
from .trainer import TrainConfig, train

IGNORE = -100


def chat_example(tok, user: str, assistant: str, system: str | None = None) -> tuple[list[int], list[int]]:
    """-> (prompt ids, completion ids) for one user turn and its assistant answer."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    prompt = tok.chat(messages, add_generation_prompt=True)
    completion = tok.encode(assistant) + [tok.im_end_id]
    return prompt, completion


def make_batches(examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int, pad_id: int,
                 max_len: int | None = None):
    """-> batch_at(step, micro) giving (input_ids (B, T), labels (B, T)), a pure function of its args.
    An example may carry a third list, the completion's labels (IGNORE where a completion token
    is context, not a target); by default every completion token is a target."""
    if not examples:
        raise RfprmError("SFT: no training examples")
    if max_len is not None:
        too_long = sum(len(ex[0]) + len(ex[1]) > max_len for ex in examples)
        if too_long == len(examples):
            raise RfprmError(f"SFT: every example is longer than the model's context ({max_len} tokens)")

    def batch_at(step: int, micro: int):
        rng = random.Random(seed * 1_000_003 + step * 101 + micro)
        chosen = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        seqs = [(ex[0] + ex[1])[:max_len] if max_len else ex[0] + ex[1] for ex in chosen]
        labels = [([IGNORE] * len(ex[0]) + (ex[2] if len(ex) > 2 else ex[1]))[:len(s)]
                  for ex, s in zip(chosen, seqs)]
        T = max(map(len, seqs))
        ids = torch.full((batch_size, T), pad_id, dtype=torch.long)
        lab = torch.full((batch_size, T), IGNORE, dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, :len(s)] = torch.tensor(s)
            lab[i, :len(l)] = torch.tensor(l)
        return ids, lab
    return batch_at


def lm_loss(model, batch):
    """Mean next-token cross-entropy over the labelled tokens; -> (loss, metrics)."""
    ids, labels = (t.to(model.device) for t in batch)
    hidden = model.model(ids)                                  # (B, T, H)
    H = hidden.shape[-1]
    targets = labels[:, 1:].reshape(-1)                        # token t predicts t+1
    loss = linear_cross_entropy(hidden[:, :-1].reshape(-1, H), model.lm_head.weight, targets)
    return loss, {}


def train_sft(model, examples, cfg: TrainConfig, batch_size: int = 32, seed: int = 0,
              pad_id: int = 0, out_dir: str | Path | None = None, resume: bool = False,
              desc: str = "sft") -> list[dict]:
    """Fine-tune `model` in place on (prompt, completion) examples; returns the loss history."""
    torch.manual_seed(seed)
    batch_at = make_batches(examples, batch_size, seed, pad_id, model.cfg.max_position_embeddings)
    return train(model, lm_loss, batch_at, cfg, out_dir=out_dir, resume=resume, desc=desc)
