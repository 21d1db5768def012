"""The one-token decode step: the cached forward of rfprm/model.py, with fewer and larger ops.

Generation spends almost all its time in one-token steps. A step on a few rows is bound by
per-op dispatch (tiny models) or by streaming the weights (big ones), so this path makes fewer,
larger ops than the reference forward, which stays the reference (tests/test_model.py compares
them, and both against transformers):
- q/k/v, and gate/up, each run as ONE matmul. The model already stores each group in one
  buffer (see `fuse_linears`): q_proj.weight, k_proj.weight and v_proj.weight are views into a
  single (in, nq+2nkv) tensor, so the fused matrix is a view, not a copy. Every weight is held
  once; the parameters keep Hugging Face's names and shapes, so checkpoints are unaffected.
- RMSNorm as `l2_normalize_rows` (3 ops) times the norm's weight times sqrt(hidden_size).
- RoPE on all query and key heads as one batched matmul by a per-step rotation matrix.
- Residual adds folded into `addmm`; no attention mask built when nothing is padded.
- On the CPU, 8+ rows of big matrices run as (w^T @ x^T)^T (`weight_first`), which MKL runs
  ~20% faster than x @ w for matrices too big for the cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import l2_normalize_rows


# ---- one buffer per group of linears that read the same input ----
def fused_weight(linears) -> torch.Tensor | None:
    """The (in, sum of outs) tensor whose column blocks are these linears' weights transposed,
    or None when the weights are not (or no longer) views into one such buffer."""
    w0 = linears[0].weight
    total = sum(m.weight.shape[0] for m in linears)
    base = w0.t()                                              # (in, out_0), view of the buffer
    if base.stride() != (total, 1):
        return None
    offset = 0
    for m in linears:
        w = m.weight
        if (w.dtype != w0.dtype or w.device != w0.device or w.stride() != (1, total)
                or w.untyped_storage().data_ptr() != w0.untyped_storage().data_ptr()
                or w.storage_offset() != w0.storage_offset() + offset):
            return None
        offset += w.shape[0]
    return torch.as_strided(w0.detach(), (w0.shape[1], total), (total, 1))


def fuse_linears(*linears: nn.Linear) -> None:
    """Make the linears' weights (out_i, in) views into one (in, sum out_i) buffer, in place:
    each Parameter object stays the same (optimizers keep working) and only its storage moves.
    A no-op when they already share one; otherwise one copy of the group, the old storage freed.
    Module.to() and load_state_dict(assign=True) give each weight its own storage again; the
    model calls this after loading and before decoding."""
    if fused_weight(linears) is not None:
        return
    w0 = linears[0].weight
    total = sum(m.weight.shape[0] for m in linears)
    with torch.no_grad():
        buf = torch.empty(w0.shape[1], total, dtype=w0.dtype, device=w0.device)  # (in, out)
        offset = 0
        for m in linears:
            n = m.weight.shape[0]
            if w0.device.type != "meta":
                buf[:, offset:offset + n].copy_(m.weight.t())
            m.weight.data = buf[:, offset:offset + n].t()      # (out_i, in) view
            offset += n


# ---- the step ----
def _version(p: torch.Tensor):
    """p's in-place update counter; None for inference tensors (made under inference_mode),
    which have none: only replacing them is noticed."""
    return None if p.is_inference() else p._version


def matmuls(weight_first: bool):
    """(addmm(c, x, w) = c + x @ w, mm(x, w) = x @ w), for x (B, in) and w (in, out) views;
    see weight_first(). The weight-first results are transposed (column-major) views."""
    if not weight_first:
        return torch.addmm, torch.mm
    return (lambda c, x, w: torch.addmm(c.expand(x.shape[0], w.shape[1]).t(), w.t(), x.t()).t(),
            lambda x, w: torch.mm(w.t(), x.t()).t())


def weight_first(backbone, batch: int) -> bool:
    """Whether to ask for x @ w as (w^T @ x^T)^T: the same product, which MKL (the CPU's BLAS)
    runs ~20% faster for 8+ rows of matrices too big for the cache (~0.5B models and up), and
    ~10% slower for small, cache-resident ones."""
    big = backbone.cfg.hidden_size * backbone.cfg.intermediate_size >= 2**20
    return batch >= 8 and big and backbone.embed_tokens.weight.device.type == "cpu"


@dataclass
class DecodeWeights:
    """What decode_step reads: views of the parameters, plus the norms' scales (tiny vectors)."""
    layers: list[tuple]         # per layer (s_attn, w_qkv, b_qkv, w_o, s_mlp, w_gate_up, w_down)
    lora: list | None           # per layer, LoRA terms of (qkv, o, gate_up, down); see _lora_terms
    floor: torch.Tensor         # sqrt(hidden_size * rms_norm_eps), 0-dim float32: see l2_normalize_rows
    final_norm: torch.Tensor    # the final norm's weight times sqrt(hidden_size)


def decode_weights(backbone) -> DecodeWeights:
    """Per layer: norm scale, fused qkv weight (H, nq+2nkv) and bias, o_proj weight^T, norm
    scale, fused gate/up weight (H, 2I), down_proj weight^T, all for `x @ w`. The matrices are
    views of the parameters (re-fused first if something gave them separate storage); the norm
    scales are recomputed when a parameter is replaced or updated in place."""
    params = [*backbone.layers.parameters(), backbone.norm.weight]
    key = tuple((id(p), p.data_ptr(), _version(p)) for p in params)
    if backbone._decode is not None and backbone._decode[0] == key:
        return backbone._decode[1]
    backbone.fuse_weights()
    params = [*backbone.layers.parameters(), backbone.norm.weight]
    key = tuple((id(p), p.data_ptr(), _version(p)) for p in params)
    root_d = math.sqrt(backbone.cfg.hidden_size)
    with torch.no_grad():
        layers = []
        for layer in backbone.layers:
            a, m = layer.self_attn, layer.mlp
            layers.append((layer.input_layernorm.weight * root_d,
                           fused_weight((a.q_proj, a.k_proj, a.v_proj)),
                           torch.cat((a.q_proj.bias, a.k_proj.bias, a.v_proj.bias)),
                           a.o_proj.weight.detach().t(),
                           layer.post_attention_layernorm.weight * root_d,
                           fused_weight((m.gate_proj, m.up_proj)),
                           m.down_proj.weight.detach().t()))
        lora = [_lora_terms(layer) for layer in backbone.layers]
        lora = lora if any(t is not None for t in lora) else None
        floor = torch.tensor(math.sqrt(backbone.cfg.hidden_size * backbone.cfg.rms_norm_eps),
                             dtype=torch.float32, device=backbone.norm.weight.device)
        final_norm = backbone.norm.weight * root_d
    backbone._decode = (key, DecodeWeights(layers, lora, floor, final_norm))
    return backbone._decode[1]


def _lora_terms(layer):
    """LoRA adapters (rfprm/lora.py) on this layer's linears, grouped as the step's matmuls:
    for (qkv, o, gate_up, down) a list of (column offset, A^T (in, r), B^T (r, out), scale),
    or None when the layer has none."""
    a, m = layer.self_attn, layer.mlp
    groups = ((a.q_proj, a.k_proj, a.v_proj), (a.o_proj,), (m.gate_proj, m.up_proj), (m.down_proj,))
    terms, found = [], False
    for group in groups:
        offset, items = 0, []
        for lin in group:
            if hasattr(lin, "lora_A"):
                items.append((offset, lin.lora_A.weight.detach().t(), lin.lora_B.weight.detach().t(),
                              lin.lora_scaling))
            offset += lin.out_features
        terms.append(items)
        found = found or bool(items)
    return terms if found else None


def _add_lora(out, u, items):
    """out[:, cols] += scale * (u @ A^T) @ B^T for each adapter of the group, in place."""
    for offset, a_t, b_t, scale in items:
        delta = (u @ a_t) @ b_t
        out[:, offset:offset + delta.shape[1]].add_(delta, alpha=scale)
    return out


@torch.inference_mode()
def decode_step(backbone, tokens, rotation, attn_mask, cache, weights: DecodeWeights | None = None):
    """One new token per row: tokens (B,) long; rotation (B, hs, hs) from
    backbone.rope.rotation(positions); attn_mask (B, 1, 1, cache.length + 1) bool, True at real
    keys, or None when nothing is padded -> final hidden states (B, H). Same math as
    backbone(tokens[:, None], positions, key_mask, cache)[:, 0], which is its reference.
    weights: decode_weights(backbone), fetched once per generation by the caller (checking that
    they are current takes as long as a tiny model's step)."""
    cfg = backbone.cfg
    B, nh, nkv, hs = tokens.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    n_qk, inter = (nh + nkv) * hs, cfg.intermediate_size
    if cache.length + 1 > cache.max_len:
        raise ValueError(f"KV cache holds {cache.max_len} slots; all are used")
    weights = weights or decode_weights(backbone)
    floor = weights.floor
    addmm, mm = matmuls(backbone.weight_first(B))
    x = F.embedding(tokens, backbone.embed_tokens.weight)                    # (B, H)
    slots = cache.step_views()  # per layer: where this step's k, v go; all keys, values so far
    loras = weights.lora or [None] * len(weights.layers)
    for (s_attn, w_qkv, b_qkv, w_o, s_mlp, w_gate_up, w_down), (k_new, v_new, k, v), lora in zip(
            weights.layers, slots, loras):
        u = l2_normalize_rows(x, floor).mul_(s_attn)
        qkv = addmm(b_qkv, u, w_qkv)                                         # (B, (nh+2nkv)*hs)
        if lora:
            qkv = _add_lora(qkv.contiguous(), u, lora[0])
        qk = torch.bmm(qkv[:, :n_qk].view(B, nh + nkv, hs), rotation)       # RoPE on q and k heads
        k_new.copy_(qk[:, nh:])                                              # (B, nkv, hs)
        v_new.copy_(qkv[:, n_qk:].view(B, nkv, hs))
        # the query heads of one K/V head as that head's queries: plain attention, no GQA
        # expansion (half the time of enable_gqa for one token)
        q = qk[:, :nh].view(B, nkv, nh // nkv, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)      # (B, nkv, nh/nkv, hs)
        y = y.reshape(B, nh * hs)
        x = addmm(x, y, w_o)                                                   # x + o_proj(y)
        if lora:
            x = _add_lora(x.contiguous(), y, lora[1])
        u = l2_normalize_rows(x, floor).mul_(s_mlp)
        gate_up = mm(u, w_gate_up)                                             # (B, 2I)
        if lora:
            gate_up = _add_lora(gate_up.contiguous(), u, lora[2])
        h = F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:])
        x = addmm(x, h, w_down)                                                # x + mlp
        if lora:
            x = _add_lora(x.contiguous(), h, lora[3])
    cache.length += 1
    return weights.final_norm * l2_normalize_rows(x, floor)


@torch.inference_mode()
def decode_logits(lm, tokens, rotation, attn_mask, cache, vocab_limit: int | None = None,
                  weights: DecodeWeights | None = None):
    """decode_step + lm_head -> logits (B, vocab_limit) in the model's dtype; the padding rows
    beyond vocab_limit are never computed."""
    h = decode_step(lm.model, tokens, rotation, attn_mask, cache, weights)   # (B, H)
    w = lm.lm_head.weight
    w = w if vocab_limit in (None, w.shape[0]) else w[:vocab_limit]          # (V, H)
    return matmuls(lm.model.weight_first(h.shape[0]))[1](h, w.t())
