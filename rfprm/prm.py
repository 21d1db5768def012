"""The process reward model: a Qwen2 backbone with a step head or a scalar head.

    prm = rfprm.load_prm(dir_or_name)             # rfprm's own, Qwen2.5-Math-PRM / RF-7B, or RF-1.5B
    s = prm.score(problem, trajectory, response)  # s.steps, s.trajectory, s.total, s.first_error
    ss = prm.score_batch(records)

Notable choices:
- Two heads on the same `Qwen2Model` backbone (`self.model`, so tensor names are HF's
  `model.layers.N...`):
    * `"step"`: `step_head = Linear(h, h) -> ReLU -> Linear(h, 2)`, the head of
      Qwen2.5-Math-PRM and ReasonFlux-PRM-7B. HF calls it `score` (tensors `score.0.*`,
      `score.2.*`); here `score()` is the scoring method, so the module is `step_head` and
      checkpoints are read and written under HF's names (`HF_HEAD`). A score is
      softmax(logits)[1] at a read-out position (an `<extra_0>` marker).
    * `"scalar"`: ReasonFlux-PRM-1.5B's `reward_head = Linear(h, 1)`, stored beside a causal-LM
      checkpoint as `reward_head.pt`; the score is sigmoid(w . h + b) at the last token.
  The head is applied only at the read-out positions, not at every token (same values, far
  less work). `prm(input_ids)` still gives the per-token head output, as HF's class does.
- Where each score is read (the layouts) is documented in `rfprm/prm_layout.py`. In short:
  `rfprm` puts the response before the thinking steps so every step score is conditioned on
  it (R(s_t | x, s_<t, a)), and reads the trajectory score at one extra final `<extra_0>`;
  `qwen` is the released checkpoints' own layout (trajectory score = last step's score);
  `scalar` has no step scores.
- total = mean(step scores) + alpha * trajectory score, the paper's data-selection score
  (alpha = 1.0 in its main table). With no step scores (the scalar head) total = trajectory.
- The loss is the paper's: lambda_step * mean_t (R(s_t) - r_step(t))^2, averaged per trace,
  + lambda_final * (R(x, y) - r_final)^2 (arXiv 2506.18896, the PRM training objective).
- Loading detects the checkpoint's kind (see `load_prm`) and says which head it has
  (`prm.describe()`); a checkpoint without a reward head is refused, not scored as nonsense.
  A causal-LM checkpoint's `lm_head` is never loaded: scoring does not need it.
- `prm.save(dir)` writes the HF layout: config.json (architectures
  `Qwen2ForProcessRewardModel` for the step head, plus an `"rfprm_prm"` object with layout,
  head, threshold, alpha), model.safetensors without lm_head, and the tokenizer. A scalar-head
  PRM is saved back in the 1.5B layout (`reward_head.pt` as a plain tensor state dict).
  transformers has no built-in class for either head; its `Qwen2Model.from_pretrained` reads
  the backbone of both.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import load_config, load_state_into, resolve_dtype, save_state_dict, tensor_names
from .config import ModelConfig
from .errors import RfprmError, atomic_dir, resolve_path
from .model import Qwen2Model, compile_forward, init_weights
from .prm_layout import (LAYOUTS, SCALAR_MAX_LEN, PRMBatch, PRMExample, check_layout, collate,
                         encode_record, prm_examples)
from .tokenizer import STEP_TAG, Tokenizer, check_vocab_fits, has_tokenizer, load_tokenizer

HEADS = ("step", "scalar")
HF_HEAD = "score"   # the step head's name in HF checkpoints: score.0.*, score.2.*


def to_hf_name(name: str) -> str:
    """A PRM tensor name as checkpoints spell it (step_head.0.weight -> score.0.weight)."""
    return HF_HEAD + name[len("step_head"):] if name.startswith("step_head.") else name


def from_hf_name(name: str) -> str:
    """A checkpoint tensor name as the PRM module spells it (score.0.weight -> step_head.0.weight)."""
    return "step_head" + name[len(HF_HEAD):] if name.startswith(HF_HEAD + ".") else name


@dataclass
class PRMScore:
    steps: list[float]     # one score in [0, 1] per step (empty for the scalar head)
    trajectory: float      # the trajectory-level score R(x, y)
    total: float           # mean(steps) + alpha * trajectory; = trajectory when there are no steps
    first_error: int = -1  # first step scored below prm.threshold, -1 if none


def make_step_head(hidden: int) -> nn.Sequential:
    """Qwen2.5-Math-PRM's head; indices 0 and 2 give the tensor names step_head.0.*, step_head.2.*."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))


class PRM(nn.Module):
    def __init__(self, cfg: ModelConfig, tok: Tokenizer, head: str = "step", layout: str = "rfprm",
                 threshold: float = 0.5, alpha: float = 1.0, response_as_step: bool = False,
                 source: str = "rfprm"):
        super().__init__()
        if head not in HEADS:
            raise RfprmError(f"unknown PRM head {head!r}; expected one of {', '.join(HEADS)}")
        check_layout(layout)
        if (head == "scalar") != (layout == "scalar"):
            raise RfprmError(f"a {head} head cannot read the {layout!r} layout (the scalar head "
                             f"goes with the 'scalar' layout, the step head with 'rfprm' or 'qwen')")
        if head == "step" and tok.step_id is None:
            raise RfprmError(f"the tokenizer has no {STEP_TAG} token, which the step head reads "
                             f"after every step; expected a PRM tokenizer")
        self.cfg, self.tok, self.head, self.layout = cfg, tok, head, layout
        self.threshold, self.alpha, self.response_as_step = float(threshold), float(alpha), response_as_step
        self.source = source  # what kind of checkpoint this came from, for describe()
        # step layouts refuse longer inputs; the scalar layout cuts to 2048 as RF-1.5B does
        self.max_len = SCALAR_MAX_LEN if layout == "scalar" else cfg.max_position_embeddings
        self.model = Qwen2Model(cfg)
        if head == "step":
            self.step_head = make_step_head(cfg.hidden_size)   # saved as HF's score.0.*, score.2.*
        else:
            self.reward_head = nn.Linear(cfg.hidden_size, 1)

    @property
    def device(self):
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self):
        return self.model.embed_tokens.weight.dtype

    def describe(self) -> str:
        if self.head == "step":
            head = "step head score: Linear(h,h)->ReLU->Linear(h,2), softmax[1] at each <extra_0>"
        else:
            head = "scalar head reward_head: Linear(h,1), sigmoid at the last token, no step scores"
        return (f"PRM ({self.source}): {head}; layout {self.layout!r}"
                f"{' + response as last step' if self.response_as_step else ''}; "
                f"threshold {self.threshold:g}, alpha {self.alpha:g}, max_len {self.max_len}")

    def compile_backbone(self, on: bool = True) -> "PRM":
        """The backbone's forward under `torch.compile`, or back to eager with on=False
        (`rfprm.model.compile_forward`: eager where compiling fails)."""
        compile_forward(self.model, on, "the PRM backbone")
        return self

    # ---- forward ----
    def _head_probs(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., H) -> scores (...) in [0, 1], computed in float32."""
        if self.head == "step":
            return F.softmax(self.step_head(h).float(), dim=-1)[..., 1]
        return torch.sigmoid(self.reward_head(h).float()).squeeze(-1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per-token head output, as HF computes it: step logits (B, T, 2), or the scalar head's
        pre-sigmoid reward (B, T). Scoring uses `read`, which applies the head only where read."""
        h = self.model(input_ids)                              # (B, T, H)
        return self.step_head(h) if self.head == "step" else self.reward_head(h).squeeze(-1)

    def read(self, batch: PRMBatch, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (step scores (N,), trajectory scores (B,)), float32, with gradients when enabled.
        `hidden`: the backbone's output for batch.input_ids, when the caller already has it."""
        h = self.model(batch.input_ids) if hidden is None else hidden   # (B, T, H)
        B = h.shape[0]
        rows = torch.cat([batch.step_rows, torch.arange(B, device=h.device)])
        cols = torch.cat([batch.step_cols, batch.trajectory_cols])
        probs = self._head_probs(h[rows, cols])                # (N + B,)
        return probs[:-B], probs[-B:]

    # ---- scoring ----
    def examples(self, records) -> list[PRMExample]:
        """Encode traces (and their labels, if any) in this PRM's layout, for scoring or training."""
        return prm_examples(self.tok, records, self.layout, self.max_len, self.response_as_step)

    def score(self, problem: str, trajectory: str, response: str) -> PRMScore:
        record = {"problem": problem, "trajectory": trajectory, "response": response}
        example = encode_record(self.tok, record, self.layout, self.max_len, self.response_as_step,
                                where="score")
        return self._score_examples([example], 1, False)[0]

    def score_batch(self, records, batch_size: int = 16, progress: bool = False) -> list[PRMScore]:
        """Score many traces (dicts with problem/trajectory/response), in their order. Traces are
        batched by length to waste little padding; one forward pass per batch."""
        if batch_size < 1:
            raise RfprmError(f"batch_size must be >= 1, got {batch_size}")
        return self._score_examples(self.examples(records), batch_size, progress)

    @torch.no_grad()
    def _score_examples(self, examples: list[PRMExample], batch_size: int, progress: bool) -> list[PRMScore]:
        order = sorted(range(len(examples)), key=lambda i: -len(examples[i].ids))
        pad = self.tok.pad_id if self.tok.pad_id is not None else 0
        out: list[PRMScore | None] = [None] * len(examples)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="PRM scoring", disable=not progress, dynamic_ncols=True):
            chunk = order[start:start + batch_size]
            batch = collate([examples[i] for i in chunk], pad).to(self.device)
            step_probs, traj_probs = self.read(batch)
            per_row = step_probs.cpu().split(batch.steps_per_row())
            for i, steps, traj in zip(chunk, per_row, traj_probs.cpu().tolist()):
                out[i] = self._make_score(steps.tolist(), traj)
        return out

    def _make_score(self, steps: list[float], trajectory: float) -> PRMScore:
        total = sum(steps) / len(steps) + self.alpha * trajectory if steps else trajectory
        first = next((t for t, s in enumerate(steps) if s < self.threshold), -1)
        return PRMScore(steps, trajectory, total, first)

    # ---- building and saving ----
    @classmethod
    def from_lm(cls, lm: nn.Module, tok: Tokenizer, layout: str = "rfprm", threshold: float = 0.5,
                alpha: float = 1.0, response_as_step: bool = False) -> "PRM":
        """A new step-head PRM on a copy of a causal LM's backbone, the head freshly initialised
        (the paper starts its PRM from an instruct model). A tokenizer without `<extra_0>` gets
        it as a new added token on an unused embedding row (Qwen2.5 has spare rows past its
        151,665 ids; the new row starts from its random or zero init and is learned)."""
        if layout not in ("rfprm", "qwen"):
            raise RfprmError(f"PRM.from_lm builds a step-head PRM: layout must be 'rfprm' or 'qwen', "
                             f"got {layout!r}")
        tok = with_step_token(tok, lm.cfg.vocab_size)
        with torch.device("meta"):
            prm = cls(lm.cfg, tok, "step", layout, threshold, alpha, response_as_step)
        prm.model = copy.deepcopy(lm.model)
        head = make_step_head(lm.cfg.hidden_size)
        init_weights(head)
        prm.step_head = head.to(device=prm.device, dtype=prm.dtype)
        return prm

    def save(self, out) -> Path:
        """Write the HF layout (see the module docstring), atomically; returns the directory."""
        out = Path(out)
        arch = "Qwen2ForProcessRewardModel" if self.head == "step" else "Qwen2ForCausalLM"
        cfg = self.cfg.replace(torch_dtype=str(self.dtype).removeprefix("torch."), architectures=[arch])
        config = cfg.to_hf_dict()
        config["rfprm_prm"] = {"layout": self.layout, "head": self.head, "threshold": self.threshold,
                               "alpha": self.alpha, "response_as_step": self.response_as_step}
        state = {to_hf_name(n): t for n, t in self.state_dict().items() if not n.startswith("reward_head.")}
        with atomic_dir(out) as tmp:
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
            save_state_dict(state, tmp)
            if self.head == "scalar":
                torch.save({k: v.detach().cpu().clone() for k, v in self.reward_head.state_dict().items()},
                           tmp / "reward_head.pt")
            self.tok.save(tmp)
        return out


def with_step_token(tok: Tokenizer, embedding_rows: int) -> Tokenizer:
    """`tok` itself if it has `<extra_0>`, else a copy with `<extra_0>` as the next id."""
    if tok.step_id is not None:
        return tok
    new_id = tok.vocab_size
    if new_id >= embedding_rows:
        raise RfprmError(f"cannot add {STEP_TAG} to the tokenizer: its next id {new_id} has no "
                         f"embedding row (the model has {embedding_rows})")
    return Tokenizer(tok.mergeable_ranks, {**tok.special_tokens, STEP_TAG: new_id}, tok.pattern,
                     tok.normalization, tok.non_special, tok.chat_template)


# ---- the loss ----
def prm_loss(prm: PRM, batch: PRMBatch, lambda_step: float = 1.0,
             lambda_final: float = 1.0, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """lambda_step * MSE(step scores, step_rewards) + lambda_final * MSE(trajectory score,
    trajectory_reward). The step term averages within each trace, then over traces, so long
    traces do not outweigh short ones (the paper's mean_t is per trace). Unlabelled targets
    (NaN) are left out; a term with no targets in the batch is zero. `hidden`: the backbone's
    output for the batch when the caller has it (the auxiliary LM loss shares it). -> (loss, metrics)."""
    batch = batch.to(prm.device)
    step_probs, traj_probs = prm.read(batch, hidden)
    B = batch.input_ids.shape[0]
    zero = step_probs.sum() * 0 + traj_probs.sum() * 0         # keeps the graph when a term is empty
    labelled = ~torch.isnan(batch.step_targets)
    if labelled.any():
        err = (step_probs - batch.step_targets.nan_to_num()).square() * labelled
        rows = batch.step_rows
        per_trace = torch.zeros(B, device=err.device).index_add(0, rows, err)
        counts = torch.zeros(B, device=err.device).index_add(0, rows, labelled.float())
        has = counts > 0
        step_loss = (per_trace[has] / counts[has]).mean()
    else:
        step_loss = zero
    has_final = ~torch.isnan(batch.trajectory_targets)
    if has_final.any():
        final_loss = (traj_probs[has_final] - batch.trajectory_targets[has_final]).square().mean()
    else:
        final_loss = zero
    loss = lambda_step * step_loss + lambda_final * final_loss
    return loss, {"step_mse": step_loss.item(), "final_mse": final_loss.item()}


# ---- loading ----
def _read_prm_meta(ckpt: Path) -> dict | None:
    path = ckpt / "config.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("rfprm_prm")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise RfprmError(f"{path}: not a valid JSON object") from None
    if meta is None:
        return None
    checks = {"head": lambda v: v in HEADS, "layout": lambda v: v in LAYOUTS,
              "threshold": lambda v: isinstance(v, (int, float)) and math.isfinite(v),
              "alpha": lambda v: isinstance(v, (int, float)) and math.isfinite(v),
              "response_as_step": lambda v: isinstance(v, bool)}
    if not isinstance(meta, dict):
        raise RfprmError(f"{path}: rfprm_prm must be an object with layout/head/threshold/alpha")
    for key, value in meta.items():
        if key in checks and not checks[key](value):
            raise RfprmError(f"{path}: rfprm_prm.{key} = {value!r} is not valid")
    return meta


def load_reward_head(path: Path, hidden: int) -> dict[str, torch.Tensor]:
    """reward_head.pt -> {"weight": (1, H), "bias": (1,)}. Only plain tensor state dicts are
    accepted: torch.load with weights_only=True never runs code from the file. Keys may carry a
    prefix ("reward_head.weight", "v_head.weight", ...)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, ...: all mean "not plain tensors"
        raise RfprmError(f"{path}: not a plain tensor state dict (torch.load with weights_only=True "
                         f"failed: {str(e).splitlines()[0][:120]}); rfprm will not unpickle it. "
                         f"Re-save it as torch.save(head.state_dict(), path)") from None
    if not isinstance(state, dict):
        raise RfprmError(f"{path}: expected a state dict with weight and bias, got {type(state).__name__}")
    out = {}
    for part in ("weight", "bias"):
        keys = [k for k in state if isinstance(k, str) and (k == part or k.endswith("." + part))]
        if len(keys) != 1 or not isinstance(state[keys[0]], torch.Tensor):
            raise RfprmError(f"{path}: expected exactly one tensor named {part!r} (or '<prefix>.{part}'), "
                             f"found keys {sorted(map(str, state))[:6]}")
        out[part] = state[keys[0]]
    w, b = out["weight"].reshape(-1), out["bias"].reshape(-1)
    if w.numel() != hidden or b.numel() != 1:
        raise RfprmError(f"{path}: reward head weight has {w.numel()} values and bias {b.numel()}; "
                         f"expected Linear({hidden}, 1): {hidden} and 1")
    return {"weight": w[None, :], "bias": b}


def load_prm(path, device="cpu", dtype=None, layout: str | None = None) -> PRM:
    """A PRM checkpoint directory (or shipped name) -> PRM, in eval mode. The kind is detected:
    - rfprm's own: config.json has an `"rfprm_prm"` object (layout, head, threshold, alpha);
    - Qwen2.5-Math-PRM / ReasonFlux-PRM-7B: `score.*` tensors (and no lm_head), layout 'qwen';
    - ReasonFlux-PRM-1.5B: causal-LM safetensors plus `reward_head.pt`, layout 'scalar'.
    `layout` overrides the stored one (e.g. read a Qwen2.5-Math-PRM in the 'rfprm' layout)."""
    ckpt = resolve_path(path)
    cfg = load_config(ckpt)
    names = tensor_names(ckpt)
    meta = _read_prm_meta(ckpt) or {}
    head_file = ckpt / "reward_head.pt"
    if "head" in meta:
        head, source = meta["head"], "rfprm"
    elif any(n.startswith("score.") for n in names):
        head, source = "step", "Qwen2.5-Math-PRM / ReasonFlux-PRM-7B layout"
    elif head_file.is_file():
        head, source = "scalar", "ReasonFlux-PRM-1.5B layout: causal LM + reward_head.pt"
    else:
        raise RfprmError(f"{ckpt} has no reward head (neither score.* tensors nor reward_head.pt); "
                         f"it is a language model: use rfprm.load_model")
    if "lm_head.weight" in names:
        source += "; its lm_head is not loaded (scoring does not use it)"
    layout = layout or meta.get("layout") or ("qwen" if head == "step" else "scalar")
    if not has_tokenizer(ckpt):
        raise RfprmError(f"{ckpt}: no tokenizer beside the weights (tokenizer.json, vocab.json + "
                         f"merges.txt or *.tiktoken); a PRM reads its steps with its own tokenizer")
    tok = load_tokenizer(ckpt)
    check_vocab_fits(tok, cfg.vocab_size, str(ckpt))
    dtype = resolve_dtype(dtype, cfg, device)
    with torch.device("meta"):
        prm = PRM(cfg, tok, head, layout, meta.get("threshold", 0.5), meta.get("alpha", 1.0),
                  meta.get("response_as_step", False), source)
    if head == "step":
        load_state_into(prm, ckpt, device, dtype, rename=from_hf_name, skip=lambda n: n == "lm_head.weight")
    else:
        if not head_file.is_file():
            raise RfprmError(f"{ckpt}: config.json says the PRM has a scalar head, "
                             f"but reward_head.pt is missing")
        load_state_into(prm.model, ckpt, device, dtype, rename=lambda n: n.removeprefix("model."),
                        skip=lambda n: n == "lm_head.weight")
        state = load_reward_head(head_file, cfg.hidden_size)
        prm.reward_head.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()},
                                        assign=True)
    return prm.eval()
