"""Training and evaluating a PRM: the library side of train_prm.py.

The pipeline (arXiv 2506.18896, the reward labels and the training objective):
1. traces -> labels: fused step rewards and the template-guided trajectory reward
   (`rfprm.labels`), computed once and written to JSONL so they can be inspected;
2. a PRM initialised from a causal LM's backbone (the paper starts from an instruct model)
   with a fresh step head, trained on L = λ_step·MSE(steps) + λ_final·MSE(trajectory);
3. its threshold chosen on a validation split (best first-error F1) and stored with it;
4. evaluation on held-out traces: ProcessBench-style F1, step AUC, totals per teacher.

Baselines trained the same way, on the same traces and budget:
- outcome-only reward model: every step's target and the trajectory's are the final answer's
  correctness (0/1), i.e. outcome supervision spread over the steps;
- step-only ablation: λ_final = 0 (no trajectory term).

Notable choice: an optional auxiliary language-model loss (`lm_aux`, on the PRM input's tokens
of traces whose every step the quality judge passed) keeps the backbone's knowledge of sound
steps while the head learns to verify, which tiny models need. It needs tied embeddings (the PRM keeps no lm_head): tiny models have them.

A second auxiliary, for a first stage (`marker_aux`): at each step's <extra_0>, the same tied
LM head must name the last token of the step's *correct* result, as a `marker_target` function
gives it (the built-in world's `step_result`: the step's last `a op b`, recomputed from the
written a and b; for its numbers the last token is the units digit). The marker then has to
fetch the result the backbone predicts at `=`, which is half of comparing it with the written
one; on the built-in world it removes the ~1,500-step plateau before a tiny PRM verifies.
With `marker_tokens="all"` the marker names every token of the correct result instead (one
cross-entropy term per token, all averaged, so the marker's distribution spreads over the
result's tokens as a bag): a slip in a leading digit then also differs from what the marker
holds. The correct result is an oracle of the built-in world; `lm_step_results` gives a target
that needs none: the start model's own reading of each step's result in context (where it
would write another digit, that digit), which agrees with the world's arithmetic on most steps.
"""
from __future__ import annotations

import bisect
import itertools
import json
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .answers import format_trace
from .errors import RfprmError
from .evaluate import by_group, choose_threshold, evaluate_scores
from .kernels import linear_cross_entropy
from .memory import RunSettings
from .lora import (HEAD, PRM_META, LoraConfig, apply_lora, has_lora, is_lora_prm, load_adapter, load_lora_prm,
                   save_adapter)
from .prm import PRM, load_prm, prm_loss
from .prm_layout import collate, prm_examples, render
from .steps import split_steps
from .trainer import TrainConfig, train

EVAL_ONLY_FIELDS = ("teacher", "first_error")
BUCKET = 8   # batches drawn together and sorted by length (see bucketed_batches)


@dataclass
class PRMTrainSpec:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 30
    lambda_step: float = 1.0
    lambda_final: float = 1.0
    lm_aux: float = 0.5           # weight of the auxiliary LM loss (0 = off)
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    ckpt_every: int = 100
    bucket: int = BUCKET          # batches drawn together and sorted by length (1 = plain random batches)
    compile: bool = False         # run the backbone through torch.compile while training (PRM.compile_backbone)
    freeze_backbone: bool = False  # train the heads only (the backbone's weights stay; no LM loss then)
    schedule: str = "cosine"      # learning-rate decay after warm-up: "cosine" or "wsd" (TrainConfig)
    marker_aux: float = 0.0       # weight of the marker auxiliary (module docstring; needs a marker_target)
    marker_tokens: str = "last"   # which tokens of the correct result the marker names: "last" or "all"
    weight_decay: float = 0.1     # AdamW's, on matrices only (TrainConfig)
    lora: LoraConfig | None = None  # train LoRA adapters + the step head instead of every weight
    lora_base: str = ""           # the checkpoint the adapters apply to (written in adapter_config.json)
    grad_accum: int = 0           # micro-batches per optimizer step over all processes (0: one per process)
    log_every: int = 1            # a row of train_state/progress.json every this many steps (1: each step's loss)


def hide_eval_fields(records: list[dict]) -> list[dict]:
    """Copies without the evaluation-only fields: no scorer may read the teacher or first_error."""
    return [{k: v for k, v in r.items() if k not in EVAL_ONLY_FIELDS} for r in records]


def outcome_targets(records: list[dict], is_correct) -> list[dict]:
    """Outcome supervision: every step and the trajectory get the final answer's 0/1 correctness."""
    out = []
    for r in records:
        c = float(is_correct(r["response"], r["answer"]))
        n = len(r["step_rewards"]) if "step_rewards" in r else None
        if n is None:
            raise RfprmError("outcome targets need labelled records (step_rewards gives the step count)")
        out.append({**r, "step_rewards": [c] * n, "trajectory_reward": c})
    return out


def _sound(record: dict) -> bool:
    parts = record.get("label_parts") or {}
    quality = parts.get("quality")
    return bool(quality) and min(quality) >= 0.99


def keep_layers(lm, n: int):
    """`lm` cut to its first n decoder layers (in place; the final norm stays), for a smaller
    PRM backbone: a step costs about n / num_hidden_layers as much (PRMRecipe.prm_layers)."""
    total = lm.cfg.num_hidden_layers
    if not 1 <= n <= total:
        raise RfprmError(f"prm_layers must be between 1 and the model's {total} layers, got {n}")
    lm.cfg = lm.cfg.replace(num_hidden_layers=n)
    lm.model.cfg = lm.cfg
    lm.model.layers = torch.nn.ModuleList(list(lm.model.layers)[:n])
    return lm


def make_loss(spec: PRMTrainSpec):
    """The training loss: prm_loss, plus the auxiliary LM term on the sound traces' tokens and
    the marker auxiliary where the batch carries marker targets."""
    def loss_fn(prm: PRM, item):
        batch, rows_sound = item
        batch = batch.to(prm.device)
        hidden = prm.model(batch.input_ids)                    # one forward for every term
        loss, metrics = prm_loss(prm, batch, spec.lambda_step, spec.lambda_final, hidden)
        if spec.marker_aux > 0 and batch.marker_targets is not None and (batch.marker_targets >= 0).any():
            h = hidden[batch.step_rows, batch.step_cols]       # (N, H) at the step markers
            k = batch.marker_targets.shape[1]                  # each marker names up to k tokens
            h = h.unsqueeze(1).expand(-1, k, -1).reshape(-1, h.shape[-1])
            marker = linear_cross_entropy(h, prm.model.embed_tokens.weight, batch.marker_targets.reshape(-1))
            loss = loss + spec.marker_aux * marker
            metrics["marker"] = marker.item()
        if spec.lm_aux > 0 and rows_sound.any():
            rows_sound = rows_sound.to(prm.device)
            ids = batch.input_ids[rows_sound]
            h = hidden[rows_sound][:, :-1]                     # (b, T-1, H)
            targets = ids[:, 1:].clone()
            targets[targets == prm.tok.step_id] = -100         # markers are the head's, not the LM's
            targets[targets == prm.tok.pad_id] = -100
            lm = linear_cross_entropy(h.reshape(-1, h.shape[-1]), prm.model.embed_tokens.weight,
                                      targets.reshape(-1))
            loss = loss + spec.lm_aux * lm
            metrics["lm"] = lm.item()
        return loss, metrics
    return loss_fn


_RESULT = re.compile(r"=\s*(-?\d+(?:\.\d+)?)")   # a step's written result: the number after an "="
_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)")
LOGIT_BUDGET = 2**28   # logits one batch of lm_step_results may hold (float32: 1 GiB)


@torch.no_grad()
def lm_step_results(lm, tok, records: list[dict], batch_size: int = 64, progress: bool = True) -> list[list]:
    """The LM's own reading of each thinking step's result (the number after the step's last
    "="): the marker target that needs no oracle (PRMRecipe.marker_source="model"). One
    teacher-forced pass over each trace, in the policy's own format (the chat prompt, then
    thinking and response), gives the LM's greedy next token at every position. Along the written
    result (and the token after it), at the first token where the LM would write another, the
    reading is the written tokens before it plus the LM's token there, read as a number; where it
    would write none other, the written result. A step the LM agrees with reads as written; a
    slip reads as the digit where the LM parts from it (`6 * 13 = 88` reads "7", `= 7.` "78").
    -> per record, per step, the reading (str), or None (no "=" and number in the step, or the
    LM would write no number there)."""
    lm.eval()
    plans = []                                    # (ids, [(first token, last token + 1) or None per step])
    for r in records:
        prompt = tok.chat([{"role": "user", "content": r["problem"]}], add_generation_prompt=True)
        body = format_trace(r["trajectory"], r["response"])
        ids = tok.encode(body)
        ends = list(itertools.accumulate(len(tok.encoding.decode_single_token_bytes(i)) for i in ids))
        raw, pos, spans = body.encode(), 0, []
        for step in split_steps(r["trajectory"]):
            at = raw.find(step.encode(), pos)
            found = list(_RESULT.finditer(step))
            if at < 0 or not found:
                spans.append(None)
                continue
            pos = at + len(step.encode())
            b0 = at + len(step[:found[-1].start(1)].encode())
            b1 = at + len(step[:found[-1].end(1)].encode())
            first = bisect.bisect_right(ends, b0)          # the token holding the result's first byte
            last = bisect.bisect_left(ends, b1) + 1        # one past the token holding its last
            spans.append((len(prompt) + first, len(prompt) + last))
        cut = max((s[1] + 1 for s in spans if s is not None), default=len(prompt) + 1)
        plans.append(((prompt + ids)[:cut], spans))      # nothing after the last result is read
    out: list[list] = [[] for _ in records]
    order = sorted(range(len(records)), key=lambda i: len(plans[i][0]))
    device = next(lm.parameters()).device
    batches, k = [], 0                            # up to batch_size rows, and ~2^28 logits (1 GiB) at most
    while k < len(order):
        n = 1
        while (n < batch_size and k + n < len(order)
               and (n + 1) * len(plans[order[k + n]][0]) * lm.cfg.vocab_size <= LOGIT_BUDGET):
            n += 1
        batches.append(order[k:k + n])
        k += n
    for rows in tqdm(batches, desc="reading step results", disable=not progress, unit="batch"):
        width = max(len(plans[i][0]) for i in rows)
        ids = torch.tensor([plans[i][0] + [0] * (width - len(plans[i][0])) for i in rows], device=device)
        pred = lm(ids).argmax(-1).tolist()               # right padding: causal rows are unaffected
        for row, i in zip(pred, rows):
            ids_i, spans = plans[i]
            for s in spans:
                if s is None:
                    out[i].append(None)
                    continue
                end = min(s[1] + 1, len(ids_i))            # the token after the number too
                j = next((p for p in range(s[0], end) if row[p - 1] != ids_i[p]), end)
                text = tok.decode(ids_i[s[0]:j] + ([row[j - 1]] if j < end else []))
                m = _NUMBER.match(text)
                out[i].append(m.group(1) if m else None)
    return out


def add_marker_targets(tok, examples: list, records: list[dict], marker_target, tokens: str = "last") -> None:
    """Set each example's marker_targets: per step (split_steps of the trajectory, as the layout
    splits it), [the last token] (tokens="last") or every token (tokens="all") of the step's
    target result, or [] where there is none. The target is the record's `marker_results[t]`
    where the record carries them (lm_step_results), else marker_target(step)."""
    if tokens not in ("last", "all"):
        raise RfprmError(f"marker tokens must be 'last' or 'all', got {tokens!r}")
    for e, r in zip(examples, records):
        out, given = [], r.get("marker_results")
        for t, step in enumerate(split_steps(r["trajectory"])):
            result = (given[t] if t < len(given) else None) if given is not None else marker_target(step)
            ids = tok.encode(result) if result else []
            out.append(ids[-1:] if tokens == "last" else ids)
        e.marker_targets = out + [[]] * (len(e.step_positions) - len(out))   # qwen's response step


def bucketed_batches(examples: list, sound: list[bool], batch_size: int, seed: int, pad_id: int,
                     grad_accum: int = 1, bucket: int = BUCKET):
    """-> batch_at(step, micro) -> (PRMBatch, sound rows), a pure function of its arguments (the
    resumable trainer's contract), with length bucketing: `bucket` batches' worth of examples is
    drawn at once (seeded by the group index), sorted by length and cut into batches, which the
    group's draws take in a shuffled order. A batch then pads to about its own length instead of
    the longest of 16-32 random traces (on world traces a step costs about a quarter less).
    Each micro-batch is one draw, so accumulation works too."""
    if batch_size < 1 or bucket < 1 or grad_accum < 1:
        raise RfprmError(f"bucketed_batches: batch_size, grad_accum and bucket must be >= 1, "
                         f"got {batch_size}, {grad_accum}, {bucket}")
    if not examples:
        raise RfprmError("no training examples")

    def batch_at(step: int, micro: int):
        group, k = divmod(step * grad_accum + micro, bucket)
        rng = random.Random(seed * 1_000_003 + group)
        idx = sorted((rng.randrange(len(examples)) for _ in range(batch_size * bucket)),
                     key=lambda i: len(examples[i].ids))
        order = list(range(bucket))
        rng.shuffle(order)   # long and short batches in no fixed order
        idx = idx[order[k] * batch_size:(order[k] + 1) * batch_size]
        return collate([examples[i] for i in idx], pad_id), torch.tensor([sound[i] for i in idx])
    return batch_at


def train_prm_model(init_lm, tok, labelled: list[dict], spec: PRMTrainSpec, layout: str = "rfprm",
                    out_dir: str | Path | None = None, resume: bool = False, desc: str = "PRM",
                    callback=None, init_prm: str | Path | None = None, marker_target=None) -> PRM:
    """A step-head PRM from `init_lm`'s backbone, trained on labelled trace records.
    `init_prm`: a PRM checkpoint whose weights (backbone and step head) the PRM starts from
    instead, for a two-stage recipe (e.g. the step head first, then the trajectory term).
    `marker_target`: step text -> its correct result (str) or None, for spec.marker_aux."""
    torch.manual_seed(spec.seed)
    prm = PRM.from_lm(init_lm, tok, layout=layout)
    if init_prm is not None and is_lora_prm(init_prm):
        if spec.lora is None:
            raise RfprmError(f"--init-prm {init_prm} is a LoRA adapter: train on with --lora, or merge it first")
        load_adapter(prm, init_prm, trainable=HEAD)        # a LoRA first stage: its adapters and head
        prm.lora_base = spec.lora_base
    elif init_prm is not None:
        try:
            start = load_prm(init_prm, device=str(prm.device))
        except RfprmError as e:
            raise RfprmError(f"--init-prm: {e}") from None
        mine, theirs = prm.state_dict(), start.state_dict()
        if start.head != "step" or {k: v.shape for k, v in mine.items()} != {k: v.shape for k, v in theirs.items()}:
            raise RfprmError(f"--init-prm {init_prm}: expected a step-head PRM with the same "
                             f"tensors as the model ({start.describe()})")
        prm.load_state_dict(theirs)
    if spec.lora is not None and not has_lora(prm):
        apply_lora(prm, spec.lora, trainable=HEAD)          # everything else frozen
        prm.lora_base = spec.lora_base
    examples = prm_examples(prm.tok, labelled, layout, prm.max_len, prm.response_as_step)
    if not any(e.step_targets is not None or e.trajectory_target is not None for e in examples):
        raise RfprmError("PRM training: no example has step_rewards or trajectory_reward")
    sound = [_sound(r) for r in labelled]
    if spec.lm_aux > 0 and not init_lm.cfg.tie_word_embeddings:
        raise RfprmError("lm_aux needs a model with tied embeddings (the PRM keeps no lm_head); set lm_aux=0")
    if spec.freeze_backbone:   # the auxiliary losses train the backbone: nothing for them to do
        spec = replace(spec, lm_aux=0.0, marker_aux=0.0)
    if spec.marker_aux > 0:
        if not init_lm.cfg.tie_word_embeddings:
            raise RfprmError("marker_aux needs a model with tied embeddings (the PRM keeps no lm_head); "
                             "set marker_aux=0")
        if marker_target is None and not all("marker_results" in r for r in labelled):
            raise RfprmError("marker_aux > 0 needs a marker_target function (step text -> its correct result: a "
                             "task's step_result; the built-in world has one, --data has none): set marker_aux=0")
        add_marker_targets(prm.tok, examples, labelled, marker_target, spec.marker_tokens)
    pad = prm.tok.pad_id if prm.tok.pad_id is not None else 0
    micro_size, grad_accum = distributed.micro_batches(spec.batch_size, spec.grad_accum, "traces")
    cfg = TrainConfig(steps=spec.steps, lr=spec.lr, warmup=min(spec.warmup, spec.steps // 5),
                      ckpt_every=spec.ckpt_every, bf16=spec.bf16, schedule=spec.schedule,
                      weight_decay=spec.weight_decay, grad_accum=grad_accum,
                      gradient_checkpointing=spec.gradient_checkpointing, log_every=spec.log_every)
    batch_at = bucketed_batches(examples, sound, micro_size, spec.seed, pad, cfg.grad_accum, spec.bucket)
    trainable = {n: p.requires_grad for n, p in prm.named_parameters()}
    if spec.freeze_backbone:
        # Only the step head learns: no gradient flows into the backbone, so a step costs about a
        # forward pass (the auxiliary losses were switched off above).
        prm.model.requires_grad_(False)
    if spec.compile:
        prm.compile_backbone()
    try:
        train(prm, make_loss(spec), batch_at, cfg, out_dir=out_dir, resume=resume, desc=desc, callback=callback)
    finally:
        if spec.compile:
            prm.compile_backbone(False)   # scoring afterwards runs the eager reference
        for n, p in prm.named_parameters():
            p.requires_grad_(trainable[n])
    return prm.eval()


# ----------------------------------------------------------------------------- saving (LoRA or not)

def save_trained_prm(prm: PRM, out) -> Path:
    """prm.save(out), or for a PRM carrying LoRA adapters the adapter directory: PEFT's
    adapter_config.json (modules_to_save ["score"]) + adapter_model.safetensors (adapters and
    the step head under PEFT's names), the PRM's settings (rfprm_prm.json) and its tokenizer.
    Under torchrun rank 0 writes and every rank waits for it."""
    out = Path(out)
    if distributed.is_main():
        if has_lora(prm):
            meta = {"layout": prm.layout, "head": prm.head, "threshold": prm.threshold, "alpha": prm.alpha,
                    "response_as_step": prm.response_as_step}
            def more(tmp):
                (tmp / PRM_META).write_text(json.dumps(meta, indent=2))
                prm.tok.save(tmp)
            save_adapter(prm, out, base=getattr(prm, "lora_base", ""), extra=HEAD, task_type=None, write_more=more)
        else:
            prm.save(out)
    distributed.barrier()
    return out


def load_trained_prm(path, device: str = "cpu") -> PRM:
    """What save_trained_prm wrote: a PRM checkpoint, or a LoRA PRM on its base."""
    return load_lora_prm(path, device=device) if is_lora_prm(path) else load_prm(path, device=device)


def longest_input(tok, records: list[dict], layout: str, sample: int = 64) -> int:
    """Tokens of the longest PRM input among `records` (the `sample` longest by characters are
    tokenized): the sequence length a memory estimate needs before anything is labelled."""
    texts = [render(layout, r.get("problem", ""), r.get("trajectory", ""), r.get("response", ""))[0]
             for r in records]
    longest = sorted(texts, key=len, reverse=True)[:sample]
    return max((len(tok.encode(t)) for t in longest), default=1)


def training_memory(cfg, tok, records: list[dict], layout: str, batch_size: int, grad_accum: int = 0,
                    lora: LoraConfig | None = None, device: str = "cpu") -> RunSettings:
    """What one process's PRM training step holds (for rfprm.memory.estimate): its micro-batch of
    the longest traces, the step head trained in full, and the adapters or every weight; weights in
    the checkpoint's dtype on a GPU, float32 on the CPU."""
    micro, _ = distributed.micro_batches(batch_size, grad_accum, "traces")
    H = cfg.hidden_size
    return RunSettings(batch=micro, seq_len=min(longest_input(tok, records, layout) + 8, cfg.max_position_embeddings),
                       dtype=(cfg.torch_dtype or "float32") if str(device).startswith("cuda") else "float32",
                       train=True, lora_r=lora.r if lora else 0, lora_targets=lora.target_modules if lora else (),
                       lm_loss=False, head_params=H * H + H + 2 * H + 2)


def format_results(results: dict) -> str:
    """train_variants' evaluations as train_prm.py prints them: F1, accuracies, AUC, threshold per
    variant, then the first variant's total score per teacher (when the traces name teachers)."""
    lines = [f"\n{'model':<14}{'F1':>7}{'flawed':>8}{'flawless':>10}{'AUC':>7}{'threshold':>11}"]
    for name, r in results.items():
        lines.append(f"{name:<14}{r['f1']:>7.1f}{r['flawed_acc']:>8.1f}{r['flawless_acc']:>10.1f}"
                     f"{r['auc']:>7.1f}{r['threshold']:>11.3f}")
    main = next(iter(results.values()))
    if "total_by_teacher" in main:
        lines.append(f"\ntotal score (mean step + {main.get('alpha', 1.0):g}·trajectory) by teacher, "
                     f"{next(iter(results))}:")
        for teacher, s in main["total_by_teacher"].items():
            lines.append(f"  {teacher:<12}{s['mean']:.3f} ± {s['std']:.3f}  (n={s['n']})")
    return "\n".join(lines)


def lora_depth(total: int, layers: int, lora, explicit: bool) -> int:
    """The PRM's decoder layers (0: all) when it starts from a model of `total` layers. LoRA adapts
    the start model as it is (the adapter's base is that checkpoint), so a preset's cut to fewer
    layers is dropped, in one printed line, and an explicit one (`explicit`) refused."""
    if not lora or not layers or layers == total:
        return layers
    if explicit:
        raise RfprmError(f"--lora adapts --model as it is: prm_layers={layers} would cut it to a model no "
                         f"adapter base matches; --set prm_layers=0")
    print(f"--lora: every layer of --model (prm_layers={layers} would leave the adapters no checkpoint as base)")
    return 0


def evaluate_prm(prm: PRM, val: list[dict], test: list[dict], batch_size: int = 32) -> dict:
    """Choose prm.threshold on `val` (best first-error F1), then measure on `test`.
    Both need `first_error`; totals per teacher are reported when `teacher` is present."""
    val_scores = prm.score_batch(val, batch_size=batch_size)
    prm.threshold = choose_threshold([s.steps for s in val_scores], [r["first_error"] for r in val])
    test_scores = prm.score_batch(test, batch_size=batch_size)
    result = evaluate_scores([s.steps for s in test_scores], [r["first_error"] for r in test], prm.threshold)
    if all("teacher" in r for r in test):
        result["total_by_teacher"] = by_group([s.total for s in test_scores], [r["teacher"] for r in test])
    return result

