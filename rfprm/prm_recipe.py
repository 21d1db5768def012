"""The whole PRM training recipe: named presets, two stages, and the baselines trained alike.

`rfprm.prm_train` trains one PRM for one stage (`PRMTrainSpec`); this module says which stages
a run trains and with what, as train_prm.py runs it:

    recipe = PRESETS["world"]                        # or "data", "method", "tiny-prm"; a plain dataclass
    results, prm = train_variants(lm, tok, labelled, recipe, ["reasonflux", "outcome"], work, ...)

- The method's loss is λ_step · step MSE + λ_final · trajectory MSE (arXiv 2506.18896, the PRM
  training objective). A tiny PRM sits at the label variance for a long while before it learns
  to verify, so the recipe trains in two stages: (1) the step loss alone (λ_final = 0) for
  `steps`, on the quality judge's verdicts (`first_stage_targets="quality"`: 1 sound, 0.4 no
  progress, 0 wrong, one of the three parts the fused step reward is made of) and with the
  marker auxiliary (`rfprm.prm_train`); (2) the full loss on the fused step rewards for
  `second_stage_steps` at `second_stage_lr`, the step head alone when `second_stage_head_only`.
  `second_stage_steps = 0` is one stage with the full loss on the fused rewards throughout.
- The trajectory score is read by the same head at one more marker, so a frozen backbone leaves
  it little to learn from: in a second stage that trains the backbone, `second_stage_traces =
  "trajectory"` keeps only the traces that carry a trajectory reward (rollouts are costly, so
  `rollout_traces` labels a few thousand), each batch then training both terms, and
  `second_stage_marker` keeps the marker auxiliary so the backbone holds its arithmetic, and
  `second_stage_targets = "quality"` trains that stage on the verdicts (a wrong step 1 below a
  sound one) instead of the fused rewards (about 0.3 below); docs/results.md measures both.
- Variants share the budget and the traces: `reasonflux` (the method), `step-only` (λ_final = 0
  in every stage: the ablation of the trajectory term), `outcome` (every target is the final
  answer's 0/1 correctness: outcome supervision spread over the steps) and `response-only` (the
  Qwen2.5-Math-PRM analogue the paper compares against: trained on the steps of the final
  response alone, never seeing a thinking trajectory, λ_final = 0; each response step takes
  the lowest label of the thinking steps `rfprm.steps.align_pairs` pairs it with, so it learns
  from the same labels, moved onto the response). Every variant is then applied alike, to
  (trajectory, response) pairs: the paper's point is how a response-trained PRM judges thinking. The first stage is
  trained once and shared; with fused first-stage targets it *is* the step-only ablation.
- `prm_layers` keeps the first N decoder layers of the start model (0 = all): on the built-in
  world 4 of tiny-policy's 6 learn as fast per step at two thirds of the cost.
- Every stage saves its state under the work directory, so a run resumes where it stopped.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from . import distributed
from .checkpoint import load_model
from .errors import RfprmError, atomic_file
from .prm_train import (PRMTrainSpec, evaluate_prm, hide_eval_fields, lm_step_results, load_trained_prm,
                        outcome_targets, save_trained_prm, train_prm_model)
from .tokenizer import load_tokenizer
from .steps import align_pairs, join_steps, split_steps

VARIANTS = ("reasonflux", "step-only", "outcome", "response-only")


@dataclass
class PRMRecipe:
    # the built-in world's traces (train_prm.py without --data)
    n_train: int = 20000          # training traces
    n_val: int = 200              # validation traces: the threshold
    n_test: int = 400             # held-out test traces
    policy_problems: int = 0      # also label the policy's own samples on this many fresh problems
    policy_samples: int = 8       # samples per problem for policy_problems (distinct traces kept)
    policy_repeat: int = 1        # each policy trace this many times in the training pool
    # labels
    rollouts: int = 4             # template-guided answers per trace for the trajectory reward
    rollout_traces: int = 1000    # trajectory reward for this many training traces only (-1: all)
    encoder: str = "ngram"        # Φ of alignment and coherence: "ngram", or an LM (dir or shipped name)
    world_judge: str = "noisy"    # built-in world only: "noisy" (LLM-like) or "oracle" (the exact judge)
    tau: float = 0.1              # temperature of the coherence contrast (method.md, coherence)
    n_negatives: int = 8          # steps of other traces in each coherence contrast
    fusion_temperature: float = 1.0  # softmax temperature of the three-signal fusion
    # the PRM
    prm_layers: int = 0           # keep the first N decoder layers of --model (0: all; --init-prm: its depth)
    layout: str = "rfprm"         # PRM input layout: "rfprm" (response first) or "qwen"
    alpha: float = 1.0            # stored with the PRM: total = mean step + alpha * trajectory (bon.py's α)
    # stage 1: the step loss alone
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    bucket: int = 8               # batches drawn together and sorted by length (1: plain random batches)
    lambda_step: float = 1.0
    first_stage_targets: str | None = None  # "quality" | "fused"; None: quality when the labels carry it
    lm_aux: float = 0.5           # auxiliary LM loss on sound traces (0: off)
    marker_aux: float = 0.0       # marker auxiliary of stage 1 (0: off; its target: marker_source)
    marker_tokens: str = "last"   # the marker names the result's "last" token or "all" of them
    marker_source: str = "task"   # the marker's result: "task" (the task's step_result; in the world its
                                  # arithmetic, an oracle) or "model" (the start model's own reading)
    # stage 2: the full loss
    second_stage_steps: int = 300  # 0: one stage with the full loss throughout
    second_stage_lr: float = 2e-4
    second_stage_head_only: bool = True  # train the step head alone, the backbone frozen
    second_stage_traces: str = "all"     # "all", or "trajectory": only the traces with a trajectory reward
    second_stage_marker: bool = False    # keep stage 1's marker auxiliary in a second stage that trains the backbone
    second_stage_targets: str = "fused"  # the second stage's step targets: "fused", or "quality" (the verdicts)
    lambda_final: float = 0.25    # weight of the trajectory term
    # running
    eval_every: int = 500         # held-out F1 / AUC every this many steps (0: at the end only)
    compile: bool = True          # the backbone under torch.compile (eager where it cannot compile)
    fp32: bool = False            # on CUDA, float32 instead of bf16 autocast


PRESETS = {
    # tiny-policy on the built-in world, about 6 minutes on 2 cores: batches of 16 traces (32 take
    # twice the time and end 8 points of F1 higher over 3 seeds); the marker names the start
    # model's own reading of each step's result, not the world's arithmetic (within the seed
    # spread of it, 3 seeds; docs/results.md, "The default recipe in this world")
    "world": PRMRecipe(prm_layers=4, marker_aux=0.5, marker_source="model", batch_size=16),
    # the world recipe at four times the training (batches of 32, 4,000 + 300 steps; about 17
    # minutes on 2 cores): past the noisy judge's own F1 on held-out teachers, 3 seeds
    # (docs/results.md, "The default recipe at four times the training")
    "world-long": PRMRecipe(prm_layers=4, marker_aux=0.5, marker_source="model", batch_size=32, steps=4000),
    "data": PRMRecipe(),                                   # --data: every layer, no marker auxiliary
    # the paper's method alone: fused labels and the trajectory label, one stage of the joint MSE
    # (λ_step = λ_final = 1) training the backbone on both terms; no verdict curriculum, no marker
    # auxiliary, the trajectory reward on every training trace. Measured, not the default.
    "method": PRMRecipe(prm_layers=4, first_stage_targets="fused", second_stage_steps=0, marker_aux=0.0,
                        lambda_final=1.0, rollout_traces=-1),
    # the shipped tiny-prm (python -m rfprm.recipes tiny-prm): the world recipe, longer, and also on
    # the policy's own samples (a PRM that scores the policy's answers must have seen their mistakes,
    # labelled the same way: the noisy judge, Φ, the trajectory reward); the recipe
    # (rfprm/world/recipes.py) then adds its JOINT_STAGE, which this preset alone does not run, and
    # chooses its α for Best-of-N on validation problems. Like the world
    # preset, its marker names the policy's own reading of each step's result (no oracle)
    "tiny-prm": PRMRecipe(prm_layers=4, marker_aux=0.5, marker_tokens="all", marker_source="model",
                          policy_problems=2000, policy_repeat=2, steps=3000),
}


def check_recipe(r: PRMRecipe) -> PRMRecipe:
    """Every field checked (one line naming the field); fills first_stage_targets for one stage."""
    for name in ("n_train", "n_val", "n_test", "rollouts", "steps", "batch_size", "bucket", "policy_samples",
                 "policy_repeat"):
        if getattr(r, name) < 1:
            raise RfprmError(f"{name} must be >= 1, got {getattr(r, name)}")
    for name in ("second_stage_steps", "policy_problems", "eval_every", "prm_layers", "marker_aux"):
        if getattr(r, name) < 0:
            raise RfprmError(f"{name} must be >= 0, got {getattr(r, name)}")
    for name in ("lr", "second_stage_lr"):
        if not getattr(r, name) > 0:
            raise RfprmError(f"{name} must be > 0, got {getattr(r, name)}")
    if r.n_negatives < 1:
        raise RfprmError(f"n_negatives must be >= 1, got {r.n_negatives}")
    for name in ("tau", "fusion_temperature"):
        if not (math.isfinite(getattr(r, name)) and getattr(r, name) > 0):
            raise RfprmError(f"{name} must be a finite number > 0, got {getattr(r, name)}")
    if r.world_judge not in ("noisy", "oracle"):
        raise RfprmError(f"world_judge must be noisy or oracle; got {r.world_judge!r}")
    if not r.encoder.strip():
        raise RfprmError("encoder must be ngram or a language model's directory / shipped name")
    if not math.isfinite(r.alpha):
        raise RfprmError(f"alpha must be a finite number, got {r.alpha}")
    if r.rollout_traces < -1:
        raise RfprmError(f"rollout_traces must be >= 0 (or -1 for all), got {r.rollout_traces}")
    if r.second_stage_traces == "trajectory" and r.rollout_traces == 0:
        raise RfprmError("second_stage_traces=trajectory trains on the traces with a trajectory reward: "
                         "it needs rollout_traces >= 1 (or -1 for all)")
    if r.second_stage_marker and r.second_stage_head_only:
        raise RfprmError("second_stage_marker keeps the marker auxiliary in a second stage that trains the "
                         "backbone: it needs second_stage_head_only=false")
    if r.second_stage_targets == "quality" and (not r.second_stage_steps or r.first_stage_targets == "fused"):
        raise RfprmError("second_stage_targets=quality trains a second stage on the judge's verdicts: it needs "
                         "second_stage_steps >= 1 and labels with verdicts (first_stage_targets quality or unset)")
    if r.policy_repeat != 1 and not r.policy_problems:
        raise RfprmError("policy_repeat weights the policy's own traces: it needs policy_problems >= 1")
    for name, allowed in (("first_stage_targets", (None, "fused", "quality")), ("marker_tokens", ("last", "all")),
                          ("marker_source", ("task", "model")),
                          ("second_stage_traces", ("all", "trajectory")),
                          ("second_stage_targets", ("fused", "quality")),
                          ("layout", ("rfprm", "qwen"))):
        if getattr(r, name) not in allowed:
            raise RfprmError(f"{name} must be one of {', '.join(map(str, allowed))}; got {getattr(r, name)!r}")
    if r.first_stage_targets == "quality" and not r.second_stage_steps:
        raise RfprmError("first_stage_targets=quality is a first stage: it needs second_stage_steps >= 1 "
                         "(the second trains on the fused step rewards)")
    if r.first_stage_targets is None and not r.second_stage_steps:
        r = replace(r, first_stage_targets="fused")   # a one-stage run trains on the method's fused rewards
    return r


def check_sources(r: PRMRecipe, changed: set, with_data: bool, label_models: bool) -> None:
    """The recipe's world-only fields against where the traces come from (train_prm.py's --data,
    --judge / --expert): one line when they do not fit."""
    if r.policy_problems and with_data:
        raise RfprmError("policy_problems works on the built-in world only; with --data, add the "
                         "policy's labelled samples to the --data file")
    if label_models and not with_data:
        raise RfprmError("--judge and --expert label --data traces; the built-in world's judge is "
                         "--set world_judge=noisy|oracle")
    if with_data and "world_judge" in changed:
        raise RfprmError("world_judge is the built-in world's; with --data the judge is --judge DIR")


def label_options(r: PRMRecipe, seed: int, device: str = "cpu") -> dict:
    """The labeller's keyword arguments a recipe fixes (world_labeller and llm_labeller alike):
    Φ, the coherence contrast, the fusion temperature and the template-guided rollouts."""
    from .encoders import build_encoder
    return dict(encoder=build_encoder(r.encoder, device=device), tau=r.tau, n_negatives=r.n_negatives,
                fusion_temperature=r.fusion_temperature, n_rollouts=r.rollouts, seed=seed,
                trajectory_limit=None if r.rollout_traces < 0 else r.rollout_traces)


def quick(r: PRMRecipe) -> PRMRecipe:
    """The one-minute version the tests run: a few traces and steps, no compiling."""
    return replace(r, n_train=48, n_val=24, n_test=24, rollouts=2, steps=8, batch_size=16, rollout_traces=-1,
                   second_stage_steps=min(r.second_stage_steps, 4), policy_problems=min(r.policy_problems, 8),
                   compile=False)


def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants) or len(set(variants)) != len(variants):
        raise RfprmError(f"--variants: expected distinct names from {', '.join(VARIANTS)}; "
                         f"got {','.join(variants) or 'nothing'}")
    return variants


# ----------------------------------------------------------------------------- stages

def first_stage_records(records: list[dict], targets: str) -> list[dict]:
    """The first stage's training records. targets="quality": each step's target is the quality
    judge's verdict (labels.py keeps the three parts as label_parts); the verdicts separate a
    wrong step from a sound one by 1 instead of ~0.4, and a tiny PRM learns to verify from them
    in about a third of the steps. "fused": the records as they are."""
    if targets == "fused":
        return records
    out = []
    for i, r in enumerate(records):
        quality = (r.get("label_parts") or {}).get("quality")
        if quality is None or len(quality) != len(r["step_rewards"]):
            raise RfprmError(f"first_stage_targets=quality: training record {i} has no label_parts.quality "
                             f"with one verdict per step (labels written by rfprm have it); use "
                             f"--set first_stage_targets=fused")
        out.append({**r, "step_rewards": [float(q) for q in quality]})
    return out


def choose_first_stage_targets(recipe: PRMRecipe, labelled: list[dict]) -> PRMRecipe:
    """first_stage_targets=None: the verdicts where every record carries them (rfprm's labels
    do), else the fused rewards, said in one line."""
    if recipe.first_stage_targets is not None:
        return recipe
    has = all(len((r.get("label_parts") or {}).get("quality") or ()) == len(r.get("step_rewards") or [None])
              for r in labelled)
    if not has:
        print("first stage on the fused step rewards: not every training record carries the judge's "
              "verdicts (label_parts.quality)")
    return replace(recipe, first_stage_targets="quality" if has else "fused")


def response_only_records(records: list[dict]) -> list[dict]:
    """Training records of the response-only PRM: the response's steps stand as the scored
    steps (trajectory = response), each labelled with the lowest step reward of the thinking
    steps paired with it; no trajectory reward, no label parts. Marker readings
    (marker_source="model") move the same way: a response step takes the reading of the last
    thinking step paired with it, the result it restates."""
    out = []
    for i, r in enumerate(records):
        thinking, response = split_steps(r["trajectory"]), split_steps(r["response"])
        rewards = r.get("step_rewards")
        if rewards is None or len(rewards) != len(thinking):
            raise RfprmError(f"response-only: training record {i} has {len(rewards or [])} step rewards for "
                             f"{len(thinking)} thinking steps")
        labels, readings, given = [0.0] * len(response), [None] * len(response), r.get("marker_results")
        for th, rs in align_pairs(thinking, response):
            for j in rs:
                labels[j] = min(rewards[t] for t in th)
                readings[j] = given[th[-1]] if given is not None and th[-1] < len(given) else None
        keep = {k: v for k, v in r.items()
                if k not in ("trajectory_reward", "label_parts", "step_rewards", "marker_results")}
        moved = {"marker_results": readings} if given is not None else {}
        out.append({**keep, "trajectory": join_steps(response), "step_rewards": labels, **moved})
    return out


def stage_plan(variant: str, r: PRMRecipe, labelled: list[dict], first_records: list[dict], spec: PRMTrainSpec,
               is_correct) -> list[tuple[list[dict], PRMTrainSpec, bool]]:
    """A variant's training stages: (records, spec, is it the shared first stage)."""
    step_only = replace(spec, lambda_final=0.0)
    marker = dict(marker_aux=r.marker_aux, marker_tokens=r.marker_tokens)   # stage 1's, never the outcome RM's
    targets = labelled if r.second_stage_targets == "fused" else first_records   # the verdicts (check_recipe)
    if variant == "outcome":
        return [(outcome_targets(labelled, is_correct), spec, False)]
    if variant == "response-only":              # its own records: never the shared first stage
        plan = [(response_only_records(first_records), replace(step_only, **marker), False)]
        if r.second_stage_steps:                 # the same stages and steps as reasonflux's
            plan.append((response_only_records(targets), replace(step_only, steps=r.second_stage_steps,
                         lr=r.second_stage_lr, freeze_backbone=r.second_stage_head_only), False))
        return plan
    if not r.second_stage_steps:
        return [(labelled, replace(spec if variant == "reasonflux" else step_only, **marker), False)]
    # Two stages: the trajectory term delays the step head's late jump, so the first trains the
    # step loss alone and the second adds it, from the first's weights at a lower lr.
    first = (first_records, replace(step_only, **marker), True)
    if variant == "step-only" and r.first_stage_targets == "fused":
        return [first]                          # the reasonflux first stage is this ablation
    final = spec if variant == "reasonflux" else step_only
    if r.second_stage_marker and not r.second_stage_head_only:
        final = replace(final, **marker)        # the backbone keeps its arithmetic while the joint loss moves it
    second = targets
    if r.second_stage_traces == "trajectory":   # every trace of the stage trains both terms (the same for step-only)
        second = [x for x in second if x.get("trajectory_reward") is not None]
        if not second:
            raise RfprmError("second_stage_traces=trajectory: no training trace carries a trajectory reward "
                             "(rollout_traces is 0, or the labels have none); use second_stage_traces=all")
    return [first, (second, replace(final, steps=r.second_stage_steps, lr=r.second_stage_lr,
                                    freeze_backbone=r.second_stage_head_only), False)]


def marker_targets(labelled: list[dict], r: PRMRecipe, step_result, reader, work: Path, resume: bool = False,
                   device: str = "cpu") -> tuple[list[dict], object]:
    """What the marker auxiliary names, as (training records, marker_target) for train_variants.
    marker_source="task": the records as they are and the task's `step_result` (in the built-in
    world its arithmetic: an oracle). "model": no oracle; each record gets its marker_results,
    the whole `reader` model's reading of each step's result (prm_train.lm_step_results; the start
    model, before any layer is cut), read once per work directory (work/marker_results_train.json)."""
    if not r.marker_aux or r.marker_source == "task":
        return labelled, step_result
    path = Path(work) / "marker_results_train.json"
    if resume and path.exists():
        readings = json.loads(path.read_text())
        if len(readings) != len(labelled):
            raise RfprmError(f"{path}: {len(readings)} readings for {len(labelled)} training traces; "
                             f"delete it to read them again")
    else:
        if distributed.is_main():        # torchrun: rank 0 reads, the others load its file
            readings = lm_step_results(load_model(reader, device=device), load_tokenizer(reader), labelled)
            with atomic_file(path) as f:
                json.dump(readings, f)
        distributed.barrier()
        readings = json.loads(path.read_text())
    return [{**x, "marker_results": m} for x, m in zip(labelled, readings)], None


def progress_eval(every: int, val: list[dict], test: list[dict], name: str, steps: int):
    """A training callback printing held-out F1 / AUC every `every` steps: a tiny PRM sits at
    the label variance for a long while, then learns to verify quickly; this shows where it is."""
    if not (every and val and test):
        return None

    def callback(step, prm):
        if step % every == 0 and step < steps:
            prm.eval()
            res = evaluate_prm(prm, val, test)
            prm.train()
            tqdm.write(f"{name} step {step}: held-out F1 {res['f1']:.1f}, step AUC {res['auc']:.1f} "
                       f"(threshold {res['threshold']:.3f})")
    return callback


def train_variants(lm, tok, labelled: list[dict], r: PRMRecipe, variants: list[str], work: Path, *, out: Path,
                   val: list[dict], test: list[dict], seed: int = 0, bf16: bool = False, resume: bool = False,
                   init_prm=None, marker_target=None, is_correct=None, train_options: dict | None = None):
    """Train every variant on `labelled` from `lm` (its backbone, or `init_prm`'s weights), each
    under work/run_i; choose each threshold on `val` and measure on `test` (when both are
    given); save the first variant to `out`, the others to work/baseline_i.
    `train_options`: more PRMTrainSpec fields (lora, grad_accum: how to train, not what).
    -> ({variant: evaluation}, the first variant's PRM)."""
    r = choose_first_stage_targets(r, labelled)
    if r.second_stage_targets == "quality" and r.first_stage_targets == "fused":
        raise RfprmError("second_stage_targets=quality: the training labels carry no judge's verdicts "
                         "(label_parts.quality); use second_stage_targets=fused")
    spec = PRMTrainSpec(steps=r.steps, batch_size=r.batch_size, lr=r.lr, seed=seed, lambda_step=r.lambda_step,
                        lambda_final=r.lambda_final, lm_aux=r.lm_aux, bucket=r.bucket, bf16=bf16, compile=r.compile,
                        **(train_options or {}))
    needs_first = r.second_stage_steps and set(variants) - {"outcome"}
    first_records = first_stage_records(labelled, r.first_stage_targets) if needs_first else labelled
    results, main_prm, shared = {}, None, None     # shared: the saved first stage, trained once
    for i, name in enumerate(variants):
        run_dir, plan = work / f"run_{i}", stage_plan(name, r, labelled, first_records, spec, is_correct)
        prm, prm_dir = None, None                  # the current PRM, in memory or saved in prm_dir
        for k, (records, s, is_first) in enumerate(plan):
            saved = run_dir / "stage1"
            if is_first and shared is None and resume and (saved / "config.json").exists():
                shared = saved                     # the first stage finished before the interruption
            if is_first and shared is not None:
                prm, prm_dir = None, shared
                continue
            stage_dir = run_dir if k == 0 else run_dir / "stage2"
            tag = name if len(plan) == 1 else f"{name} stage {k + 1}"
            verdicts = r.first_stage_targets != "fused"   # stage 1 (k = 0) on the verdicts
            loss = "full loss" if s.lambda_final > 0 else "step loss"
            what = f"verdicts, {loss}" if k == 0 and verdicts else loss
            prm = train_prm_model(lm, tok, hide_eval_fields(records), s, r.layout, out_dir=stage_dir,
                                  resume=resume and (stage_dir / "train_state").exists(),
                                  desc=tag if len(plan) == 1 else f"{tag} ({what})",
                                  callback=progress_eval(r.eval_every, val, test, tag, s.steps),
                                  init_prm=init_prm if k == 0 else prm_dir,
                                  marker_target=marker_target if s.marker_aux else None)
            if is_first:
                save_trained_prm(prm, saved)       # rank 0 writes under torchrun; LoRA: the adapter
                shared = prm_dir = saved
        prm = prm if prm is not None else load_trained_prm(prm_dir)
        prm.alpha = r.alpha
        if val and test:
            results[name] = dict(evaluate_prm(prm, val, test), alpha=prm.alpha)   # also sets prm.threshold
        save_trained_prm(prm, out if i == 0 else work / f"baseline_{i}")
        main_prm = main_prm or prm
    return results, main_prm


def late_verifier_note(results: dict, batch_size: int = 16) -> str | None:
    """One line when the built-in world's PRM ends under an F1 of 80 (about what the noisy
    judge's labels allow): its first stage most likely left the plateau late. None otherwise.
    A step's cost is quoted for `batch_size` traces (about 6.5 ms a trace on two cores)."""
    if "reasonflux" not in results or results["reasonflux"]["f1"] >= 80:
        return None
    return (f"note: held-out F1 {results['reasonflux']['f1']:.1f} is under 80: this PRM has not learnt to "
            f"verify well yet. A tiny PRM can sit on a plateau for a long while before it does; the held-out "
            f"lines above show how far its first stage got. More first-stage steps (--set steps=N) give it "
            f"room, at about {0.0065 * batch_size:.2g} s each on two cores (batch {batch_size}).")
