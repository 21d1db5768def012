"""One small training loop shared by SFT, PRM training and the students of select_data.py.

Notable choices:
- AdamW with linear warm-up then cosine decay to `min_lr_ratio * lr`; gradient clipping;
  gradient accumulation over `grad_accum` micro-batches; bf16 autocast on CUDA when asked;
  optional gradient checkpointing (recompute each decoder layer in backward).
- Data comes from a function `batch_at(step, micro)` that must be a pure function of its
  arguments (and the run's seed). Resuming then needs no data-loader state: step k of a resumed
  run sees exactly the batch step k of an uninterrupted run would have seen.
- Checkpoints go to `out_dir/train_state/` through a temporary directory renamed into place:
  model weights (safetensors), optimizer state (`torch.save` of tensors only, read back with
  `weights_only=True`), and progress.json. `resume=True` continues from there; a run killed
  while writing a checkpoint resumes from the previous one (`errors.recover_dir`).
- Under `torchrun --nproc_per_node N` (WORLD_SIZE > 1) the same call trains data-parallel
  (`rfprm/distributed.py`): rank r computes micro-batches r, r + N, ... of each step, gradients
  and logged metrics are summed over ranks, and only rank 0 writes checkpoints and shows the
  bar. `grad_accum` (the global batch in micro-batches) must be a multiple of N; the history
  then equals a single-process run's with the same `grad_accum`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import distributed
from .errors import RfprmError, atomic_dir, recover_dir


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1     # the schedule decays to lr * min_lr_ratio
    schedule: str = "cosine"      # after warm-up: "cosine" decay, or "wsd" (stable, then a linear decay)
    decay_frac: float = 0.2       # wsd: the share of the steps spent decaying
    warmup: int = 50              # linear warm-up steps
    weight_decay: float = 0.1     # applied to matrices only, not to norms and biases
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0        # max global gradient norm (0 = off)
    grad_accum: int = 1           # micro-batches per optimizer step
    ckpt_every: int = 0           # save train_state every this many steps (0 = only at the end)
    log_every: int = 10
    bf16: bool = False            # autocast to bfloat16 (CUDA only)
    gradient_checkpointing: bool = False

    def __post_init__(self):
        if self.steps < 1 or self.grad_accum < 1 or self.warmup < 0:
            raise RfprmError(f"bad training schedule: steps={self.steps}, grad_accum={self.grad_accum}, "
                             f"warmup={self.warmup} (steps and grad_accum must be >= 1)")
        if not self.lr > 0:
            raise RfprmError(f"learning rate must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "wsd") or not 0 < self.decay_frac <= 1:
            raise RfprmError(f"bad schedule {self.schedule!r} with decay_frac {self.decay_frac} "
                             f"(expected 'cosine' or 'wsd', and 0 < decay_frac <= 1)")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up for `warmup` steps, then cosine from lr down to lr * min_lr_ratio; or, for
    schedule="wsd" (warm-up, stable, decay), lr until the last decay_frac of the steps, then a
    linear decay to lr * min_lr_ratio."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "wsd":
        decay_start = cfg.steps - max(1, round(cfg.decay_frac * cfg.steps))
        frac = min(1.0, max(0.0, (step - decay_start) / max(1, cfg.steps - decay_start)))
        return cfg.lr * (1 - (1 - cfg.min_lr_ratio) * frac)
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)


def _own_state(model) -> dict[str, torch.Tensor]:
    """state_dict without tied duplicates (safetensors refuses two names for one storage). A model
    with LoRA adapters keeps only what trains: its frozen base is rebuilt from its checkpoint
    before a resume, and a 7B base is not copied into every training checkpoint."""
    tied = model.tied_parameter_names() if hasattr(model, "tied_parameter_names") else set()
    state = model.state_dict()
    if any(".lora_A." in n for n in state):
        trains = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {n: t for n, t in state.items() if n in trains}
    return {n: t.detach().contiguous().cpu() for n, t in state.items() if n not in tied}


def save_train_state(out_dir: Path, model, opt, step: int, history: list, cfg: TrainConfig):
    with atomic_dir(out_dir / "train_state") as tmp:
        save_file(_own_state(model), tmp / "model.safetensors")
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "progress.json").write_text(json.dumps({"step": step, "history": history,
                                                       "config": asdict(cfg)}, indent=1))


def load_train_state(out_dir: Path, model, opt) -> tuple[int, list]:
    state_dir = recover_dir(out_dir / "train_state")  # a kill between atomic_dir's renames
    if not (state_dir / "progress.json").is_file():
        raise RfprmError(f"--resume: no checkpoint in {state_dir} (start without --resume)")
    weights = load_file(state_dir / "model.safetensors", device=str(next(model.parameters()).device))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    not_saved = model.tied_parameter_names() if hasattr(model, "tied_parameter_names") else set()
    own = model.state_dict()
    if any(".lora_A." in n for n in own):                       # LoRA: only what trains was saved
        not_saved = set(not_saved) | (set(own) - {n for n, p in model.named_parameters() if p.requires_grad})
    if unexpected or set(missing) - not_saved:
        raise RfprmError(f"{state_dir}: checkpoint does not fit this model "
                         f"(missing {sorted(set(missing) - not_saved)[:3]}, unexpected {unexpected[:3]})")
    opt.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
    progress = json.loads((state_dir / "progress.json").read_text())
    return progress["step"], progress["history"]


def _save_on_main(out_dir: Path, model, opt, step: int, history: list, cfg: TrainConfig):
    """Rank 0 writes the checkpoint; the others wait, so a resume always finds it complete."""
    if distributed.is_main():
        save_train_state(out_dir, model, opt, step, history, cfg)
    distributed.barrier()


def train(model: torch.nn.Module, loss_fn: Callable, batch_at: Callable, cfg: TrainConfig,
          out_dir: str | Path | None = None, resume: bool = False, desc: str = "train",
          callback: Callable | None = None) -> list[dict]:
    """Run the loop. loss_fn(model, batch) -> (loss, {metric: float}); batch_at(step, micro) -> batch.
    `callback(steps_done, model)`, when given, runs after every optimizer step (in train mode;
    a callback that evaluates should switch to eval mode and back); under torchrun, on rank 0 only.
    Returns the history: one dict per logged step (step, lr, loss and loss_fn's metrics)."""
    out_dir = Path(out_dir) if out_dir is not None else None
    device = next(model.parameters()).device
    distributed.init_from_env()
    my_micros = distributed.my_micro_batches(cfg.grad_accum)   # all of them for one process
    distributed.broadcast_params(model)
    main = distributed.is_main()
    model.train()
    if cfg.gradient_checkpointing:
        backbone = getattr(model, "model", model)
        backbone.gradient_checkpointing = True
    opt = make_optimizer(model, cfg)
    start, history = 0, []
    if resume:
        if out_dir is None:
            raise RfprmError("--resume needs an output directory")
        start, history = load_train_state(out_dir, model, opt)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, dynamic_ncols=True,
               disable=not main)
    running: dict[str, float] = {}
    logged_steps = 0
    for step in bar:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        step_metrics: dict[str, float] = {}
        for micro in my_micros:
            with autocast:
                loss, metrics = loss_fn(model, batch_at(step, micro))
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss is {loss.item()} at step {step}: lower the learning rate")
            (loss / cfg.grad_accum).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                step_metrics[k] = step_metrics.get(k, 0.0) + v / cfg.grad_accum
        distributed.all_reduce_grads(model)                   # sum of the ranks' shares
        for k, v in distributed.all_reduce_sums(step_metrics).items():
            running[k] = running.get(k, 0.0) + v
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        logged_steps += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, "lr": lr, **{k: v / logged_steps for k, v in running.items()}}
            history.append(row)
            running, logged_steps = {}, 0
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "lr")})
        if callback is not None and main:
            callback(step + 1, model)
        if out_dir is not None and cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
            _save_on_main(out_dir, model, opt, step + 1, history, cfg)
    if out_dir is not None:
        _save_on_main(out_dir, model, opt, cfg.steps, history, cfg)
    model.eval()
    if cfg.gradient_checkpointing:
        getattr(model, "model", model).gradient_checkpointing = False
    return history
