"""The Qwen2 decoder, written to be read top to bottom.

Notable choices:
- Parameter names are Hugging Face's (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`,
  `mlp.gate_proj`, `input_layernorm`, `lm_head`), so a checkpoint loads as a near-identity copy.
- Grouped-query attention: `num_key_value_heads` K/V heads shared by groups of query heads.
  Biases on q/k/v only (a Qwen2 quirk); o_proj and the MLP have none.
- RoPE in the rotate-half convention, with cos/sin tables computed in float32 and cast to the
  activations' dtype at use, exactly as transformers does (this is what makes bf16 logits agree).
- Attention through `F.scaled_dot_product_attention`, with a plain softmax(QK^T)V reference path
  beside it (`attention_ref`, selected by `model.set_attention("ref")`) that the tests compare.
- A preallocated KV cache (`KVCache`): prefill writes T slots, each decode step writes one.
  Ragged batches are left-padded; `key_mask` marks the real tokens and positions count only them.
- The language-model head is one of several heads on the same backbone: `Qwen2ForCausalLM`
  here; the PRM's step and scalar heads live in `rfprm/prm.py` and reuse `Qwen2Model`.
- Each weight is held once. q/k/v (and gate/up) are separate nn.Linear modules with HF's names
  and shapes, but their weights are views into one buffer per group (`fuse_weights`), so the
  one-token decode step (rfprm/decode.py, a lean copy of the cached forward, which stays the
  reference) runs each group as one matmul with no fused copy beside the parameters.
"""
from __future__ import annotations

import getpass
import math
import os
import re
import tempfile
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .decode import DecodeWeights, decode_logits, decode_step, decode_weights, fuse_linears, weight_first
from .kernels import apply_rope, rms_norm, rope_matrix, swiglu


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class RotaryTable:
    """cos/sin tables for RoPE, float32, grown on demand (no parameters: safe on the meta device)."""

    def __init__(self, head_dim: int, theta: float):
        self.head_dim, self.theta = head_dim, theta
        self.cos = self.sin = None

    def _build(self, length: int, device):
        # inv_freq[i] = theta^(-2i/d), as transformers computes it (int64 arange cast to float)
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64,
                                                      device=device).float() / self.head_dim))
        pos = torch.arange(length, device=device, dtype=torch.float32)
        freqs = pos[:, None] * inv_freq[None, :]              # (L, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1)               # (L, hs)
        self.cos, self.sin = emb.cos(), emb.sin()

    def ensure(self, length: int, device):
        """Make the tables cover positions [0, length) on `device`."""
        if self.cos is None or self.cos.shape[0] < length or self.cos.device != torch.device(device):
            self._build(max(length, 2 * (0 if self.cos is None else self.cos.shape[0]), 256), device)

    def __call__(self, positions: torch.Tensor):
        """positions (B, T) long -> cos, sin (B, T, hs) float32."""
        self.ensure(int(positions.max()) + 1, positions.device)
        return self.cos[positions], self.sin[positions]

    def rotation(self, positions: torch.Tensor, dtype) -> torch.Tensor:
        """positions (...) long, already covered by ensure() -> R (..., hs, hs): x @ R is RoPE."""
        return rope_matrix(self.cos[positions], self.sin[positions], dtype)


class KVCache:
    """Keys and values of every layer, preallocated: k, v (n_layer, B, n_kv, max_len, hs)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device, dtype):
        shape = (cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0  # slots filled so far (the same for every row: batches are left-padded)

    @property
    def k(self) -> torch.Tensor:
        return self._k

    @k.setter
    def k(self, value: torch.Tensor):  # per-layer views, taken once: the decode loop is hot
        self._k, self._k_layers = value, value.unbind(0)

    @property
    def v(self) -> torch.Tensor:
        return self._v

    @v.setter
    def v(self, value: torch.Tensor):
        self._v, self._v_layers = value, value.unbind(0)

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def step_views(self):
        """For the decode step writing slot `length`: per layer (k slot, v slot, k so far, v so far),
        (B, n_kv, hs) and (B, n_kv, length + 1, hs) views, made in 4 ops for all layers at once."""
        pos = self.length
        return list(zip(self.k.select(3, pos).unbind(0), self.v.select(3, pos).unbind(0),
                        self.k.narrow(3, 0, pos + 1).unbind(0), self.v.narrow(3, 0, pos + 1).unbind(0)))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, n_kv, T, hs) after the filled slots; return all keys/values so far."""
        start, T = self.length, k.shape[2]
        k_all, v_all = self._k_layers[layer], self._v_layers[layer]
        k_all.narrow(2, start, T).copy_(k)
        v_all.narrow(2, start, T).copy_(v)
        return k_all.narrow(2, 0, start + T), v_all.narrow(2, 0, start + T)

    def repeat_interleave(self, n: int) -> "KVCache":
        """Copy each row's cache n times (prefill a prompt once, then sample n continuations)."""
        new = object.__new__(KVCache)
        new.k = self.k.repeat_interleave(n, dim=1)
        new.v = self.v.repeat_interleave(n, dim=1)
        new.length = self.length
        return new


def attention_ref(q, k, v, mask):
    """Plain attention: softmax(q k^T / sqrt(hs) + mask) v, with K/V heads repeated for GQA.
    q (B, nh, T, hs); k, v (B, nkv, S, hs); mask (B, 1, T, S) bool or None (then causal)."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)                    # (B, nh, S, hs)
    v = v.repeat_interleave(groups, dim=1)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, T, S)
    if mask is None:
        T, S = q.shape[2], k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att.float(), dim=-1).to(q.dtype)
    return att @ v                                            # (B, nh, T, hs)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_head * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, cfg.hidden_size, bias=False)
        self.use_sdpa = True

    def forward(self, x, cos, sin, mask, cache: KVCache | None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)    # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        # one rotation call for the query and key heads together (half the dispatches in decode)
        q, k = apply_rope(torch.cat((q, k), dim=1), cos, sin).split((self.n_head, self.n_kv), dim=1)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)                              # (B, nkv, S, hs)
        if self.use_sdpa:
            # mask None means plain causal attention over the new tokens (no cache, no padding)
            is_causal = mask is None and T > 1 and k.shape[2] == T
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               enable_gqa=self.n_kv != self.n_head)
        else:
            y = attention_ref(q, k, v, mask)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


def build_mask(T: int, past: int, key_mask: torch.Tensor | None, device):
    """Boolean attention mask (B, 1, T, past+T): causal, and only real (unpadded) keys.
    Returns None when plain causal attention over the new tokens suffices."""
    if key_mask is None and past == 0:
        return None
    S = past + T
    q_slot = torch.arange(past, S, device=device)
    k_slot = torch.arange(S, device=device)
    mask = k_slot[None, :] <= q_slot[:, None]                 # (T, S) causal
    if key_mask is None:
        return mask[None, None]
    # a padding query sees only itself: its output is unused, but an all-masked row would be NaN
    mask = (mask[None] & key_mask[:, None, :S]) | (k_slot[None, :] == q_slot[:, None])[None]
    return mask[:, None]                                      # (B, 1, T, S)


class Qwen2Model(nn.Module):
    """The backbone: token embeddings, decoder layers, final norm -> hidden states (B, T, H)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rope = RotaryTable(cfg.head_dim, cfg.rope_theta)
        self.gradient_checkpointing = False  # recompute each layer in backward to save memory
        self._decode = None  # (key, DecodeWeights) for decode_step; see decode.decode_weights()
        self.fuse_weights()

    def train(self, mode: bool = True):
        if mode:
            self._decode = None  # training changes the weights: drop decode's cached views
        return super().train(mode)

    def forward(self, input_ids, positions=None, key_mask=None, cache: KVCache | None = None):
        """input_ids (B, T); positions (B, T) or None; key_mask (B, past+T) bool, True at real
        tokens, or None when nothing is padded; cache to read and extend, or None."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if cache is not None and past + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} slots; {past} used, {T} more requested")
        if positions is None:
            if key_mask is None:
                positions = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
            else:  # count only real tokens, as transformers does for left-padded batches
                positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:past + T]
        cos, sin = self.rope(positions)                       # (B, T, hs) float32
        mask = build_mask(T, past, key_mask, input_ids.device)
        x = self.embed_tokens(input_ids)                      # (B, T, H)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, mask, cache, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache)
        if cache is not None:
            cache.length = past + T
        return self.norm(x)

    # ---- the one-token decode step lives in rfprm/decode.py ----
    def fuse_weights(self):
        """Store q/k/v, and gate/up, of every layer as views into one buffer each (see
        decode.fuse_linears); call again after load_state_dict(assign=True) or .to()."""
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            fuse_linears(a.q_proj, a.k_proj, a.v_proj)
            fuse_linears(m.gate_proj, m.up_proj)

    def decode_weights(self) -> DecodeWeights:
        return decode_weights(self)

    def weight_first(self, batch: int) -> bool:
        return weight_first(self, batch)

    def decode_step(self, tokens, rotation, attn_mask, cache: KVCache, weights: DecodeWeights | None = None):
        return decode_step(self, tokens, rotation, attn_mask, cache, weights)


class Qwen2ForCausalLM(nn.Module):
    """Backbone + lm_head: logits over the vocabulary for every position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Qwen2Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self):
        """Share embed_tokens' weight with lm_head, and re-fuse q/k/v and gate/up (call again
        after load_state_dict(assign=True))."""
        self.model.fuse_weights()
        if self.cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, positions=None, key_mask=None, cache=None, last_only=False):
        """-> logits (B, T, V), or (B, 1, V) for the last position only when last_only."""
        h = self.model(input_ids, positions, key_mask, cache)  # (B, T, H)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(h)

    def decode_logits(self, tokens, rotation, attn_mask, cache: KVCache, vocab_limit: int | None = None,
                      weights: DecodeWeights | None = None):
        """One decode step -> logits (B, vocab_limit); see rfprm/decode.py."""
        return decode_logits(self, tokens, rotation, attn_mask, cache, vocab_limit, weights)

    def tied_parameter_names(self) -> set[str]:
        """Parameters a checkpoint may omit because they share another's weight."""
        return {"lm_head.weight"} if self.cfg.tie_word_embeddings else set()

    # ---- conveniences ----
    @property
    def device(self):
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self):
        return self.model.embed_tokens.weight.dtype

    def set_attention(self, impl: str):
        """'sdpa' (fast, default) or 'ref' (the plain reference path)."""
        if impl not in ("sdpa", "ref"):
            raise ValueError(f"attention impl must be 'sdpa' or 'ref', got {impl!r}")
        for layer in self.model.layers:
            layer.self_attn.use_sdpa = impl == "sdpa"

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        return KVCache(self.cfg, batch_size, max_len, self.device, self.dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def compile_forward(module: nn.Module, on: bool = True, what: str = "the backbone") -> nn.Module:
    """Run `module`'s forward through `torch.compile` (dynamic shapes, so batches of different
    lengths share one graph), or back in eager mode with on=False. The compiled forward is an
    instance attribute over the class's eager `forward`, so weights and tensor names are untouched
    and deleting it restores the eager reference (tests compare the two). Where compiling fails
    (e.g. no C++ compiler) the first call warns once and runs eager from then on."""
    if "forward" in vars(module):                 # undo an earlier compile_forward()
        del module.forward
    if not on:
        return module
    compile_cache_dir()
    compiled = torch.compile(module.forward, dynamic=True)

    def forward(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except Exception as e:   # a compiler error; a genuine model error raises again below
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          f"{what} runs eager")
            del module.forward
            return module.forward(*args, **kwargs)
    module.forward = forward
    return module


def compile_cache_dir(environ=os.environ) -> str:
    """Point torch.compile's on-disk cache (`TORCHINDUCTOR_CACHE_DIR`) at a folder of the CPU kernel
    set in use, torchinductor_<user>_<avx2|avx512|...>, unless the user chose a folder; returns it.
    torch 2.13 reuses a CPU kernel compiled under another `ATEN_CPU_CAPABILITY` (e.g. AVX-512, then
    an AVX2 pin), and that kernel stops the process (`index out of bounds`, signal 6). Only which
    cached kernels are found changes, never what a kernel computes."""
    try:
        user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())
    except Exception:   # no user name in some containers: inductor's own fallback
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    default = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")   # inductor's own default
    chosen = environ.get("TORCHINDUCTOR_CACHE_DIR")   # inductor writes its default here once used
    ours = re.escape(default) + r"(_(default|avx2|avx512|vsx|z vector|sve\d*))?"
    if chosen is not None and not re.fullmatch(ours, os.path.abspath(chosen)):   # the user's folder
        return chosen
    environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default}_{torch.backends.cpu.get_cpu_capability().lower()}"
    return environ["TORCHINDUCTOR_CACHE_DIR"]


def init_weights(module: nn.Module, std: float = 0.02):
    """Fresh weights for training from scratch: N(0, std) matrices, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, RMSNorm):
            nn.init.ones_(m.weight)
