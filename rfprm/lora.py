"""LoRA in plain PyTorch, with adapters that `peft` loads onto the transformers model.

LoRA (Hu et al., 2021) freezes a linear layer's weight W (out, in) and learns a low-rank
update: y = W x + (alpha / r) * B A dropout(x), with A (r, in) random and B (out, r) zero at the
start, so training begins from the base model. Training a 7B PRM or policy on one GPU this way
needs gradients and AdamW state for the adapters only (a few MB), not for 7B weights. The PRM's
own head (ReasonFlux-PRM, Sec. 3) is small and new, so it trains in full beside the adapters.

How it is wired here, so the base model is untouched:
- A and B are submodules of the targeted nn.Linear (`q_proj.lora_A`, `q_proj.lora_B`), and a
  forward hook adds their term to the linear's output. The base weights keep their names,
  storage and layout (q/k/v stay views into one buffer), and gradient checkpointing recomputes
  the hook with the layer. rfprm/decode.py adds the same term in its one-token step.
- Names follow PEFT: this model's `model.layers.0.self_attn.q_proj.lora_A.weight` is saved as
  `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` in
  `adapter_model.safetensors`, beside a PEFT `adapter_config.json`.
- `merge` writes base + (alpha / r) B A into a plain HF checkpoint:
      python -m rfprm.lora merge --model BASE --adapter DIR --out DIR
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from .checkpoint import load_config, load_model, save_model
from .errors import RfprmError, atomic_dir, cli_main, resolve_path
from .prm import PRM, from_hf_name, to_hf_name   # a PRM's head is `step_head` here, `score` in HF files
from .tokenizer import has_tokenizer, load_tokenizer

ALL_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."
HEAD = ("score.",)            # a PRM's step head under HF's name: saved in full beside its adapters
PRM_META = "rfprm_prm.json"   # a LoRA PRM's layout, threshold and alpha (a full PRM keeps them in config.json)


@dataclass
class LoraConfig:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default=ALL_LINEARS)

    def __post_init__(self):
        if not isinstance(self.r, int) or self.r <= 0:
            raise RfprmError(f"LoRA rank must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise RfprmError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        self.target_modules = tuple(self.target_modules)
        unknown = sorted(set(self.target_modules) - set(ALL_LINEARS))
        if unknown or not self.target_modules:
            raise RfprmError(f"LoRA target modules {unknown or '(none)'} do not exist in a Qwen2 "
                             f"layer; expected some of {', '.join(ALL_LINEARS)}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def to_peft(self, base: str = "", task_type: str | None = "CAUSAL_LM", modules_to_save=None) -> dict:
        """PEFT's adapter_config.json for these settings. A PRM's adapter has no task type (PEFT's
        plain PeftModel wraps any module) and keeps its head in full as modules_to_save=["score"]."""
        return {"peft_type": "LORA", "task_type": task_type, "r": self.r, "lora_alpha": self.alpha,
                "lora_dropout": self.dropout, "target_modules": list(self.target_modules),
                "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
                "init_lora_weights": True, "use_rslora": False, "use_dora": False,
                "modules_to_save": list(modules_to_save) if modules_to_save else None,
                "base_model_name_or_path": base}

    @classmethod
    def from_peft(cls, d: dict, where: str) -> "LoraConfig":
        if d.get("peft_type", "LORA") != "LORA" or d.get("use_dora") or d.get("use_rslora"):
            raise RfprmError(f"{where}: only plain LoRA adapters are supported "
                             f"(peft_type LORA, no DoRA, no rsLoRA)")
        targets = d.get("target_modules")
        targets = [targets] if isinstance(targets, str) else targets
        try:
            return cls(r=int(d["r"]), alpha=float(d["lora_alpha"]), dropout=float(d.get("lora_dropout", 0.0)),
                       target_modules=tuple(targets or ()))
        except (KeyError, TypeError, ValueError) as e:
            raise RfprmError(f"{where}: not a LoRA adapter_config.json ({e})") from None


# ---- attaching adapters ----
def _lora_hook(linear: nn.Linear, args, out):
    x = linear.lora_dropout(args[0])
    return out + linear.lora_B(linear.lora_A(x)) * linear.lora_scaling


def lora_linears(module: nn.Module):
    """(name, linear) for every linear carrying an adapter."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear) and hasattr(m, "lora_A")]


def apply_lora(module: nn.Module, config: LoraConfig, trainable: tuple[str, ...] = ()) -> nn.Module:
    """Attach adapters to every targeted linear of a Qwen2ForCausalLM, a Qwen2Model or a PRM, in
    place; freeze everything else except parameters whose name starts with one of `trainable`
    (a PRM's head, e.g. ("score.",)). -> module."""
    if lora_linears(module):
        raise RfprmError("this model already has LoRA adapters; merge or remove them first")
    targets = [(n, m) for n, m in module.named_modules()
               if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in config.target_modules]
    if not targets:
        raise RfprmError(f"no linear named {', '.join(config.target_modules)} in this model")
    for p_name, p in module.named_parameters():
        p.requires_grad_(any(to_hf_name(p_name).startswith(t) or p_name.startswith(t) for t in trainable))
    for _, m in targets:
        w = m.weight
        m.lora_A = nn.Linear(m.in_features, config.r, bias=False, device=w.device, dtype=w.dtype)
        m.lora_B = nn.Linear(config.r, m.out_features, bias=False, device=w.device, dtype=w.dtype)
        nn.init.kaiming_uniform_(m.lora_A.weight, a=math.sqrt(5))  # PEFT's default init
        nn.init.zeros_(m.lora_B.weight)
        m.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        m.lora_scaling = config.scaling
        m._lora_handle = m.register_forward_hook(_lora_hook)
    module.lora_config = config
    return module


def remove_lora(module: nn.Module, merge: bool) -> nn.Module:
    """Detach every adapter; with merge, first add (alpha / r) B A into each base weight."""
    for _, m in lora_linears(module):
        if merge:
            with torch.no_grad():
                delta = (m.lora_B.weight.float() @ m.lora_A.weight.float()) * m.lora_scaling
                m.weight.add_(delta.to(m.weight.dtype))
        m._lora_handle.remove()
        for attr in ("lora_A", "lora_B", "lora_dropout", "lora_scaling", "_lora_handle"):
            delattr(m, attr)
    if hasattr(module, "lora_config"):
        del module.lora_config
    return module


# ---- saving and loading in PEFT's format ----
def adapter_state(module: nn.Module, extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The adapter tensors under PEFT's names (plus parameters starting with `extra`, e.g. a head)."""
    state = {}
    for name, t in module.state_dict().items():
        name = to_hf_name(name)
        if ".lora_A." in name or ".lora_B." in name or any(name.startswith(e) for e in extra):
            state[PEFT_PREFIX + name] = t.detach().contiguous().cpu()
    return state


def has_lora(module: nn.Module) -> bool:
    return bool(lora_linears(module))


def save_adapter(module: nn.Module, out, base: str = "", extra: tuple[str, ...] = (),
                 task_type: str | None = "CAUSAL_LM", write_more=None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors (atomically) -> out. `extra` names
    whole modules saved beside the adapters (PEFT's modules_to_save, e.g. ("score.",) for a PRM's
    head); `write_more(tmp_dir)`, when given, adds files (a tokenizer) inside the same atomic write."""
    config = getattr(module, "lora_config", None)
    if config is None:
        raise RfprmError("save_adapter: this model has no LoRA adapters (call apply_lora first)")
    out = Path(out)
    peft = config.to_peft(str(base), task_type, [e.rstrip(".") for e in extra])
    with atomic_dir(out) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(peft, indent=2))
        save_file(adapter_state(module, extra), tmp / "adapter_model.safetensors", metadata={"format": "pt"})
        if write_more is not None:
            write_more(tmp)
    return out


def load_adapter(module: nn.Module, adapter_dir, trainable: tuple[str, ...] = ()) -> nn.Module:
    """Attach the adapter saved in `adapter_dir` to `module` (as apply_lora, then its weights),
    checking that every tensor names a linear of this model with a matching shape."""
    adapter_dir = Path(adapter_dir)
    cfg_path, weights_path = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise RfprmError(f"{adapter_dir}: missing {p.name} (expected a LoRA adapter directory)")
    try:
        config = LoraConfig.from_peft(json.loads(cfg_path.read_text()), str(cfg_path))
    except json.JSONDecodeError:
        raise RfprmError(f"{cfg_path}: not valid JSON") from None
    tensors = load_file(weights_path)
    apply_lora(module, config, trainable)
    own = module.state_dict()
    for name, t in tensors.items():
        target = from_hf_name(name.removeprefix(PEFT_PREFIX)).replace(".lora_A.default.", ".lora_A.").replace(
            ".lora_B.default.", ".lora_B.")
        if target not in own:
            remove_lora(module, merge=False)
            raise RfprmError(f"{weights_path}: tensor {name} has no place in this model "
                             f"(was the adapter trained on another base?)")
        if tuple(t.shape) != tuple(own[target].shape):
            remove_lora(module, merge=False)
            raise RfprmError(f"{weights_path}: tensor {name} has shape {tuple(t.shape)}, this model "
                             f"expects {tuple(own[target].shape)}: the adapter's base does not match")
        with torch.no_grad():
            own[target].copy_(t)
    return module


def is_lora_prm(path) -> bool:
    """A PRM's LoRA adapter (rfprm.prm_train.save_trained_prm), not a plain checkpoint."""
    return (Path(path) / "adapter_config.json").is_file()


def load_lora_prm(adapter_dir, base=None, device: str = "cpu") -> PRM:
    """A PRM saved by save_trained_prm with LoRA: its base LM (`base`, default the path in
    adapter_config.json) + the adapters and step head, in eval mode. Merge it into a plain PRM
    checkpoint with rfprm.lora.remove_lora(prm, merge=True) and prm.save(dir)."""
    adapter_dir = Path(adapter_dir)
    if not is_lora_prm(adapter_dir) or not (adapter_dir / PRM_META).is_file():
        raise RfprmError(f"{adapter_dir}: not a LoRA PRM (expected adapter_config.json and {PRM_META})")
    base = base or json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise RfprmError(f"{adapter_dir}: adapter_config.json names no base model; pass the base explicitly")
    meta = json.loads((adapter_dir / PRM_META).read_text())
    base = resolve_path(base)
    prm = PRM.from_lm(load_model(base, device=device), load_tokenizer(adapter_dir), layout=meta["layout"],
                      threshold=meta["threshold"], alpha=meta["alpha"], response_as_step=meta["response_as_step"])
    return load_adapter(prm, adapter_dir).eval()


def merge_checkpoint(model_path, adapter_dir, out) -> Path:
    """Base checkpoint + adapter -> a plain HF checkpoint with the update merged in; for a PRM's
    adapter (it has rfprm_prm.json) a PRM checkpoint (rfprm.load_prm reads it)."""
    base = resolve_path(model_path)
    if (Path(adapter_dir) / PRM_META).is_file():
        prm = load_lora_prm(adapter_dir, base)               # float32 on the CPU
        remove_lora(prm, merge=True)
        return prm.to(getattr(torch, load_config(base).torch_dtype or "float32", torch.float32)).save(out)
    dtype = getattr(torch, load_config(base).torch_dtype or "float32", torch.float32)
    model = load_model(base, dtype="float32")                 # merge in float32, then round once
    load_adapter(model, adapter_dir)
    remove_lora(model, merge=True)
    save_model(model.to(dtype), out)
    if has_tokenizer(base):
        load_tokenizer(base).save(out)
    if (base / "generation_config.json").is_file():
        (Path(out) / "generation_config.json").write_text((base / "generation_config.json").read_text())
    return Path(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m rfprm.lora", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="write base + adapter as a plain HF checkpoint")
    merge.add_argument("--model", required=True, help="base checkpoint directory (or shipped name)")
    merge.add_argument("--adapter", required=True, help="directory with adapter_config.json + adapter_model.safetensors")
    merge.add_argument("--out", required=True, help="output checkpoint directory")
    args = ap.parse_args(argv)
    out = merge_checkpoint(args.model, args.adapter, args.out)
    print(f"merged checkpoint written to {out}")


if __name__ == "__main__":
    cli_main(main)
