"""How much memory a run will need, before it starts: weights, gradients, optimizer state,
activations, KV cache and extra model copies, and a check against the device's free memory.

The counts follow what rfprm actually keeps (a 7B PRM or GRPO run on one GPU is the case that
matters; ReasonFlux-PRM Sec. 3-4 trains a 7B PRM and uses it as a reward beside a policy):
- weights: every parameter once (rfprm/model.py holds each weight once), in the run's dtype.
- gradients and AdamW: one gradient and two moments (exp_avg, exp_avg_sq) per TRAINABLE
  parameter, in the parameters' dtype: all of them for full fine-tuning, only the adapters
  (r * (in + out) per targeted linear) and the PRM head with LoRA (rfprm/lora.py).
- activations saved for backward, per token and layer (elements): the two norms' inputs and
  outputs (4H), q, k, v and attention's output as SDPA keeps them plus o_proj's input
  (3 nq hs + 2 nkv hs), and the MLP's gate, up and product (3I). With gradient checkpointing
  only each layer's input (H) is kept, plus one layer recomputed during backward. A language-
  model loss adds its logits (in the dtype and as float32 log-probabilities). Backward needs
  about one layer's activations again as working space.
- KV cache when sampling: 2 * layers * batch * nkv * max_len * hs.
- extra copies: a frozen reference policy, a critic (trained: weights, grads, AdamW), a PRM.
It is an estimate, checked in tests/test_memory.py against a measured run (within 25%).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

from .config import ModelConfig
from .errors import RfprmError

_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "float64": 8}
_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class RunSettings:
    """What a training or sampling run will do; the defaults are a plain forward pass."""
    batch: int = 1
    seq_len: int = 512
    dtype: str = "bfloat16"
    train: bool = False               # forward + backward + AdamW step
    lora_r: int = 0                   # 0: full fine-tuning when train
    lora_targets: tuple = _LINEARS
    grad_checkpointing: bool = False
    lm_loss: bool = True              # a vocabulary-sized loss (SFT, RL); False for a PRM head
    sample_batch: int = 0             # rows sampled at once (KV cache); 0: no sampling
    sample_len: int = 0               # prompt + new tokens per sampled row
    reference_copies: int = 0         # frozen copies of the same model (RL's reference policy)
    critic: bool = False              # a trained value model of the same shape (PPO)
    prm: ModelConfig | None = None    # a reward model held beside the run
    head_params: int = 0              # trainable parameters outside the backbone (a PRM's head)


@dataclass
class MemoryEstimate:
    parts: dict = field(default_factory=dict)  # name -> bytes

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def table(self) -> str:
        rows = [f"{'memory estimate':<24}{'GiB':>10}"]
        rows += [f"  {name:<22}{b / 2**30:>10.2f}" for name, b in self.parts.items()]
        rows.append(f"  {'total':<22}{self.total / 2**30:>10.2f}")
        return "\n".join(rows)


def parameter_count(cfg: ModelConfig, lm_head: bool = True) -> int:
    """Parameters of a Qwen2 model (the untied lm_head counted only when asked for)."""
    H, I, hs = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    nq, nkv = cfg.num_attention_heads * hs, cfg.num_key_value_heads * hs
    layer = H * nq + nq + 2 * (H * nkv + nkv) + nq * H + 3 * H * I + 2 * H
    head = cfg.vocab_size * H if lm_head and not cfg.tie_word_embeddings else 0
    return cfg.vocab_size * H + cfg.num_hidden_layers * layer + H + head


def lora_parameter_count(cfg: ModelConfig, r: int, targets=_LINEARS) -> int:
    """r * (in + out) for every targeted linear of every layer."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    nq, nkv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    shapes = {"q_proj": (H, nq), "k_proj": (H, nkv), "v_proj": (H, nkv), "o_proj": (nq, H),
              "gate_proj": (H, I), "up_proj": (H, I), "down_proj": (I, H)}
    return cfg.num_hidden_layers * sum(r * sum(shapes[t]) for t in targets)


def activation_bytes(cfg: ModelConfig, s: RunSettings) -> int:
    """Bytes kept for backward by one forward over batch x seq_len tokens (see the docstring)."""
    H, I, hs = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    nq, nkv = cfg.num_attention_heads * hs, cfg.num_key_value_heads * hs
    per_layer = 4 * H + 3 * nq + 2 * nkv + 3 * I                   # elements per token
    tokens, b = s.batch * s.seq_len, _BYTES[s.dtype]
    if s.grad_checkpointing:
        kept = cfg.num_hidden_layers * H + per_layer               # layer inputs + one recomputed
    else:
        kept = cfg.num_hidden_layers * per_layer
    kept += 2 * H + per_layer                                      # final norm, head input; backward's working set
    logits = tokens * cfg.vocab_size * (b + 4) if s.lm_loss else 0
    return tokens * kept * b + logits


def estimate(cfg: ModelConfig, s: RunSettings) -> MemoryEstimate:
    """The breakdown for one model of shape `cfg` run as `s` (bytes per part)."""
    if s.dtype not in _BYTES:
        raise RfprmError(f"memory estimate: unknown dtype {s.dtype!r}; expected one of {', '.join(_BYTES)}")
    if min(s.batch, s.seq_len) <= 0 or s.lora_r < 0:
        raise RfprmError(f"memory estimate: batch and seq_len must be positive and lora_r >= 0, "
                         f"got batch={s.batch}, seq_len={s.seq_len}, lora_r={s.lora_r}")
    b = _BYTES[s.dtype]
    n = parameter_count(cfg)
    adapters = lora_parameter_count(cfg, s.lora_r, s.lora_targets) if s.lora_r else 0
    trainable = (adapters + s.head_params if s.lora_r else n + s.head_params) if s.train else 0
    p = {"weights": (n + adapters + s.head_params) * b,
         "gradients": trainable * b,
         "optimizer (AdamW)": 2 * trainable * b,
         "activations": activation_bytes(cfg, s) if s.train else 0}
    if s.sample_batch:
        p["KV cache"] = (2 * cfg.num_hidden_layers * s.sample_batch * cfg.num_key_value_heads
                         * s.sample_len * cfg.head_dim * b)
    if s.reference_copies:
        p["reference copies"] = s.reference_copies * n * b
    if s.critic:
        p["critic (trained)"] = (n * b + 3 * trainable * b) if s.train else n * b
    if s.prm is not None:
        p["PRM"] = parameter_count(s.prm, lm_head=False) * b
    return MemoryEstimate({k: v for k, v in p.items() if v})


def free_bytes(device) -> int:
    """Free memory on `device`: CUDA's mem_get_info, or MemAvailable from /proc/meminfo."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def preflight(cfg: ModelConfig, settings: RunSettings, device, force: bool = False,
              quiet: bool = False) -> MemoryEstimate:
    """Print the estimate's table and check it against the device's free memory: above it,
    raise RfprmError (one line) unless `force`, which only warns. Scripts call this before
    training or sampling; with --dry-run they exit after it."""
    est = estimate(cfg, settings)
    if not quiet:
        print(est.table())
    free = free_bytes(device)
    if est.total > free:
        msg = (f"estimated memory {est.total / 2**30:.2f} GiB exceeds the {free / 2**30:.2f} GiB free on "
               f"{device}; use a smaller batch or sequence, --lora, gradient checkpointing, or --force")
        if not force:
            raise RfprmError(msg)
        print(f"warning: {msg} (continuing: --force)", file=sys.stderr)
    return est
