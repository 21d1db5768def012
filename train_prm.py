"""Train a ReasonFlux-PRM: label traces, train the PRM, choose its threshold, evaluate it.

With no arguments it runs on the built-in world on the CPU: a pool of teacher traces is
labelled (fused step rewards + template-guided trajectory reward from `tiny-policy`), a PRM is
trained from tiny-policy's weights, its threshold is chosen on validation traces, and it is
evaluated on held-out traces. `--variants` adds the baselines trained the same way: an
outcome-only reward model and the step-only ablation (λ_final = 0). Results go to a new
directory under runs/.

The default recipe fits the built-in world into about ten minutes on two CPU cores (README,
"The PRM"). A tiny PRM sits at the label variance for a long while before it learns to verify
arithmetic, so it trains in two stages:
1. the step loss alone for --steps (2,000) steps, on the quality judge's verdicts
   (--first-stage-targets quality: 1 sound, 0.4 no progress, 0 wrong, one of the three parts
   the fused step reward is made of), from which it learns to verify about 1,500 steps sooner
   than from the fused rewards, and with the marker auxiliary (--marker-aux 0.5: at each step
   marker the PRM's tied LM head names the last digit of the step's correct result, which the
   world's equation parser recomputes from the written operands), which ends the plateau
   that otherwise lasts 1,250 to over 2,200 steps depending on the seed;
2. the method's full loss, the fused step rewards plus the trajectory term with λ_final = 0.25,
   for --second-stage-steps (300) at --second-stage-lr, training the step head alone
   (--second-stage-head-only: a full second stage cost 2-3 points of first-error F1).
The PRM keeps the first 4 of tiny-policy's 6 layers (--prm-layers; all layers of any other
--model): it learns as fast per step at two thirds of the cost. The backbone trains under
torch.compile (--compile, 1.2x). The step-only ablation (`--variants ...,step-only`) shares
the first stage and gets its own second stage with λ_final = 0.

The shipped tiny-prm starts from the earlier, slower recipe, all fused and all layers, without
the marker auxiliary (an estimated 40 minutes on two cores at the measured 2.57 steps/s; F1 86.1),
and continues it seven times on the policy's own samples as well (--policy-problems, --init-prm;
the last with --marker-tokens all and --alpha 0.1: experiments/tiny_prm_chain.sh, README
"Best-of-N"). The first command:

    python train_prm.py --prm-layers 0 --first-stage-targets fused --steps 5000 --second-stage-steps 1000 \
        --second-stage-lr 5e-4 --no-second-stage-head-only --no-compile --rollout-traces 2000 --marker-aux 0

    python train_prm.py                                   # the built-in world, the PRM alone
    python train_prm.py --variants reasonflux,step-only,outcome   # with both baselines
    python train_prm.py --quick                           # a one-minute version
    python train_prm.py --init-prm DIR --steps 1000 --lr 5e-4 --second-stage-steps 0
                                                          # one more (fused) stage from a trained PRM
    python train_prm.py --policy-problems 2000            # also train on the policy's own samples
    python train_prm.py --model DIR --data traces.jsonl   # real checkpoints and data

With --data, traces that carry `step_rewards` are used as they are; others are labelled with
--judge (a local instruct model, default --model) as the quality judge and --policy (default
--model) for the template-guided rollouts. Evaluation needs `first_error` in --test-data.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from rfprm import world
from rfprm.checkpoint import load_config, load_model
from rfprm.data import read_records, write_records
from rfprm.errors import RfprmError, atomic_file, check_writable, cli_main
from rfprm.paths import resolve_path
from rfprm.prm import load_prm
from rfprm.prm_layout import STEP_TAG
from rfprm.prm_train import (PRMTrainSpec, evaluate_prm, hide_eval_fields, keep_layers, outcome_targets,
                             train_prm_model)
from rfprm.tokenizer import load_tokenizer


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-policy", help="LM whose backbone starts the PRM (dir or shipped name)")
    ap.add_argument("--init-prm", help="start the PRM from this PRM checkpoint's weights instead of "
                                       "--model's backbone (a second training stage)")
    ap.add_argument("--policy", help="policy for template-guided rollouts (default: --model)")
    ap.add_argument("--judge", help="--data only: local instruct model rating steps (default: --model)")
    ap.add_argument("--data", help="JSONL traces to train on (default: the built-in world)")
    ap.add_argument("--val-data", help="JSONL traces with first_error, for the threshold")
    ap.add_argument("--test-data", help="JSONL traces with first_error, for the evaluation")
    ap.add_argument("--fields", help="map field names: problem=question,trajectory=...")
    ap.add_argument("--skip-bad", action="store_true", help="skip malformed lines (counted) instead of stopping")
    ap.add_argument("--out", help="the trained PRM's checkpoint directory (default: runs/train_prm-<time>/prm)")
    ap.add_argument("--work", help="labels, baselines and training state (default: the --out's run dir, "
                                   "or runs/<out name>-work for an explicit --out)")
    ap.add_argument("--json", help="write the evaluation table here")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run (same --out / --work)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--fp32", action="store_true",
                    help="on CUDA, train in float32 instead of under bf16 autocast (as the CPU does)")
    ap.add_argument("--quick", action="store_true", help="a one-minute version (for the tests)")
    ap.add_argument("--n-train", type=int, default=20000, help="world: training traces")
    ap.add_argument("--n-val", type=int, default=200, help="world: validation traces (threshold)")
    ap.add_argument("--n-test", type=int, default=400, help="world: held-out test traces")
    ap.add_argument("--rollouts", type=int, default=4, help="guided answers per trace for the trajectory reward")
    ap.add_argument("--rollout-traces", type=int, default=1000,
                    help="compute the trajectory reward (policy rollouts) for this many training traces "
                         "only; the rest train the step head alone (-1: all)")
    ap.add_argument("--policy-problems", type=int, default=0,
                    help="world: also train on the policy's own samples for this many fresh problems "
                         "(labelled like the teacher traces), so that the PRM sees the mistakes it will "
                         "judge in Best-of-N; 0 = teacher traces only")
    ap.add_argument("--policy-samples", type=int, default=8,
                    help="samples per problem for --policy-problems (distinct traces are kept)")
    ap.add_argument("--policy-repeat", type=int, default=1,
                    help="--policy-problems: put each policy trace in the training pool this many times "
                         "(weights the policy's own mistakes against the teacher traces)")
    ap.add_argument("--steps", type=int, default=2000,
                    help="optimizer steps per PRM (for reasonflux with a second stage: its first stage)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--second-stage-steps", type=int, default=300,
                    help="reasonflux: train --steps with the step loss alone (λ_final = 0), then this many "
                         "steps with the full loss from there; 0 = one stage with the full loss throughout")
    ap.add_argument("--second-stage-lr", type=float, default=2e-4, help="peak learning rate of the second stage")
    ap.add_argument("--second-stage-head-only", action=argparse.BooleanOptionalAction, default=True,
                    help="the second stage trains the step head alone, the backbone frozen (README)")
    ap.add_argument("--first-stage-targets", default=None, choices=["fused", "quality"],
                    help="step targets of the first stage: the quality judge's verdicts alone "
                         "(label_parts.quality; a curriculum, the second stage then trains on the fused "
                         "rewards; the default with two stages when every record has them) or the fused "
                         "step rewards (the method's; the default otherwise)")
    ap.add_argument("--bucket", type=int, default=8,
                    help="batches drawn together and sorted by length, to pad less (1 = plain random batches)")
    ap.add_argument("--lambda-step", type=float, default=1.0)
    ap.add_argument("--lambda-final", type=float, default=0.25,
                    help="weight of the trajectory term (method.md leaves λ open; 0.25 beat 1.0 in the "
                         "second stage, see the README)")
    ap.add_argument("--alpha", type=float, default=1.0,
                    help="α stored with the PRM: the weight of the trajectory score in its total, mean step + "
                         "α·trajectory, and bon.py's default α (1.0, the paper's value for data selection; "
                         "the shipped tiny-prm keeps 0.1, chosen for Best-of-N on validation problems)")
    ap.add_argument("--lm-aux", type=float, default=0.5, help="auxiliary LM loss weight on sound traces (0 = off)")
    ap.add_argument("--marker-aux", type=float, default=None,
                    help="weight of the marker auxiliary in the first stage: at each step marker the PRM's "
                         "LM head names the last digit of the step's correct result, recomputed by the "
                         "world's equation parser (default 0.5 on the built-in world, 0 with --data; "
                         "0 = off; never for the outcome RM)")
    ap.add_argument("--marker-tokens", default="last", choices=["last", "all"],
                    help="which tokens of the step's correct result the marker auxiliary names: the last "
                         "(the units digit) or all of them, as a bag (a leading-digit slip then differs too)")
    ap.add_argument("--prm-layers", type=int, default=None,
                    help="the PRM keeps only the first N decoder layers of --model (0 = all; default 4 of "
                         "tiny-policy's 6, all of any other --model); the rollouts still use the whole --policy")
    ap.add_argument("--layout", default="rfprm", choices=["rfprm", "qwen"], help="PRM input layout")
    ap.add_argument("--variants", default="reasonflux",
                    help="which PRMs to train, in order (the first is the --out checkpoint): reasonflux "
                         "(the method), step-only (λ_final = 0), outcome (outcome-only RM)")
    ap.add_argument("--eval-every", type=int, default=500,
                    help="print held-out F1/AUC every this many steps while training (0 = only at the end)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="train with the backbone under torch.compile (1.2x the steps/s on two cores, "
                         "bench/bench_prm_train.py, after ~20 s of compiling; falls back to eager mode "
                         "where it cannot compile, e.g. without a C++ compiler)")
    args = ap.parse_args(argv)
    if args.eval_every < 0:
        raise RfprmError(f"--eval-every must be >= 0, got {args.eval_every}")
    for name in ("n_train", "n_val", "n_test", "rollouts", "steps", "batch_size", "bucket", "policy_samples",
                 "policy_repeat"):
        if getattr(args, name) < 1:
            raise RfprmError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.second_stage_steps < 0:
        raise RfprmError(f"--second-stage-steps must be >= 0, got {args.second_stage_steps}")
    for name in ("lr", "second_stage_lr"):
        if not getattr(args, name) > 0:
            raise RfprmError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not math.isfinite(args.alpha):
        raise RfprmError(f"--alpha must be a finite number, got {args.alpha}")
    if args.marker_aux is not None and args.marker_aux < 0:
        raise RfprmError(f"--marker-aux must be >= 0 (0 = off), got {args.marker_aux}")
    if args.prm_layers is not None and args.prm_layers < 0:
        raise RfprmError(f"--prm-layers must be >= 0 (0 = all), got {args.prm_layers}")
    if args.policy_problems < 0:
        raise RfprmError(f"--policy-problems must be >= 0, got {args.policy_problems}")
    if args.policy_repeat != 1 and not args.policy_problems:
        raise RfprmError("--policy-repeat weights the policy's own traces: it needs --policy-problems N")
    if args.policy_problems and args.data:
        raise RfprmError("--policy-problems works on the built-in world only; with --data, add the "
                         "policy's labelled samples to the --data file")
    if args.rollout_traces < -1:
        raise RfprmError(f"--rollout-traces must be >= 0 (or -1 for all), got {args.rollout_traces}")
    if args.seed < 0:
        raise RfprmError(f"--seed must be >= 0, got {args.seed}")
    if args.first_stage_targets is None and not args.second_stage_steps:
        args.first_stage_targets = "fused"   # a one-stage run trains on the method's fused rewards
    if args.first_stage_targets == "quality" and not args.second_stage_steps:
        raise RfprmError("--first-stage-targets quality is a first stage: it needs --second-stage-steps >= 1 "
                         "(the second trains on the fused step rewards)")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in ("reasonflux", "step-only", "outcome")]
    if unknown or not args.variants or len(set(args.variants)) != len(args.variants):
        raise RfprmError(f"--variants: expected distinct names from reasonflux, step-only, outcome; "
                         f"got {','.join(args.variants) or 'nothing'}")
    if args.quick:
        args.n_train, args.n_val, args.n_test = 48, 24, 24
        args.rollouts, args.steps, args.batch_size, args.rollout_traces = 2, 8, 16, -1
        args.second_stage_steps = min(args.second_stage_steps, 4)
        args.policy_problems = min(args.policy_problems, 8)
        args.compile = False   # compiling takes longer than the quick run's few steps
    return args


def world_splits(args) -> tuple[list[dict], list[dict], list[dict], frozenset]:
    """Teacher traces for training, validation and test, on distinct problems; and every
    problem text they (and the reserved evaluation problems) use."""
    from rfprm.recipes import held_out_texts
    used = set(held_out_texts())
    splits = []
    for k, n in enumerate((args.n_train, args.n_val, args.n_test)):
        recs = world.make_traces(n, args.seed * 10 + k, exclude=frozenset(used))
        used |= {r["problem"] for r in recs}
        splits.append(recs)
    return (*splits, frozenset(used))


def policy_pool(args, used: frozenset) -> list[dict]:
    """The policy's own traces on --policy-problems fresh world problems (none of the teacher
    pools' or the reserved evaluation problems), sampled as bon.py samples."""
    from rfprm.bon import sample_traces
    from rfprm.recipes import MAX_NEW_TOKENS
    policy_dir = resolve_path(args.policy or args.model)
    policy, ptok = load_model(policy_dir, device=args.device), load_tokenizer(policy_dir)
    problems = [{"problem": p.text, "answer": p.answer}
                for p in world.make_problems(args.policy_problems, args.seed * 10 + 3, exclude=used)]
    traces = sample_traces(policy, ptok, problems, args.policy_samples, world.problem_prompt, MAX_NEW_TOKENS,
                           seed=args.seed + 1, progress=True)
    # a sample that wrote the step marker itself cannot be laid out (1 of 5,685 distinct ones here)
    return [t for t in traces if STEP_TAG not in t["trajectory"] + t["response"]]


def label(records, args, device, work: Path, name: str):
    """Fused step labels + trajectory reward, computed once per work directory."""
    path = work / f"labels_{name}.jsonl"
    if args.resume and path.exists():
        return read_records(path, "labelled")
    limit = None if args.rollout_traces < 0 else args.rollout_traces
    if args.data:
        from rfprm.encoders import NgramEncoder
        from rfprm.judges import LLMJudge
        from rfprm.labels import label_records, policy_rollout
        judge_dir = resolve_path(args.judge or args.model)
        policy_dir = resolve_path(args.policy or args.model)
        judge = LLMJudge(load_model(judge_dir, device=device), load_tokenizer(judge_dir))
        policy, ptok = load_model(policy_dir, device=device), load_tokenizer(policy_dir)
        from rfprm.judges import LLMTemplateExtractor, guided_prompt
        labelled = label_records(records, judge=judge, encoder=NgramEncoder(),
                                 rollout=policy_rollout(policy, ptok, seed=args.seed, progress=True),
                                 extract_template=LLMTemplateExtractor(policy, ptok),
                                 template_prompt=guided_prompt, is_correct=world.is_correct,
                                 n_rollouts=args.rollouts, seed=args.seed, trajectory_limit=limit)
    else:
        from rfprm.labels import world_labeller
        policy_dir = resolve_path(args.policy or args.model)
        labeller = world_labeller(load_model(policy_dir, device=device), load_tokenizer(policy_dir),
                                  n_rollouts=args.rollouts, seed=args.seed, trajectory_limit=limit)
        labelled = labeller(hide_eval_fields(records))
    write_records(path, labelled)
    return labelled


def first_stage_records(records: list[dict], targets: str) -> list[dict]:
    """The first stage's training records. targets="quality": each step's target is the quality
    judge's verdict (1 sound, 0.4 no progress, 0 wrong), one of the three parts the fused step
    reward is made of (labels.py keeps them as label_parts). The verdicts separate a wrong step
    from a sound one by 1 instead of ~0.4, and a tiny PRM learns to verify from them in about a
    third of the steps (README); the fused rewards, the method's targets, come in the second stage."""
    if targets == "fused":
        return records
    out = []
    for i, r in enumerate(records):
        quality = (r.get("label_parts") or {}).get("quality")
        if quality is None or len(quality) != len(r["step_rewards"]):
            raise RfprmError(f"--first-stage-targets quality: training record {i} has no label_parts.quality "
                             f"with one verdict per step (labels written by rfprm have it); use "
                             f"--first-stage-targets fused")
        out.append({**r, "step_rewards": [float(q) for q in quality]})
    return out


def progress_eval(args, val, test, name, steps=None):
    """A training callback printing held-out F1 / AUC every --eval-every steps: a tiny PRM
    sits at the label variance for the first ~2,000 steps, then learns to verify quickly, and
    this is how a user sees where a run is."""
    if not (args.eval_every and val and test):
        return None
    from tqdm.auto import tqdm

    def callback(step, prm):
        if step % args.eval_every == 0 and step < (steps or args.steps):
            prm.eval()
            r = evaluate_prm(prm, val, test)
            prm.train()
            tqdm.write(f"{name} step {step}: held-out F1 {r['f1']:.1f}, step AUC {r['auc']:.1f} "
                       f"(threshold {r['threshold']:.3f})")
    return callback


def print_table(results: dict):
    print(f"\n{'model':<14}{'F1':>7}{'flawed':>8}{'flawless':>10}{'AUC':>7}{'threshold':>11}")
    for name, r in results.items():
        print(f"{name:<14}{r['f1']:>7.1f}{r['flawed_acc']:>8.1f}{r['flawless_acc']:>10.1f}"
              f"{r['auc']:>7.1f}{r['threshold']:>11.3f}")
    main = next(iter(results.values()))
    if "total_by_teacher" in main:
        print(f"\ntotal score (mean step + {main.get('alpha', 1.0):g}·trajectory) by teacher, {next(iter(results))}:")
        for teacher, s in main["total_by_teacher"].items():
            print(f"  {teacher:<12}{s['mean']:.3f} ± {s['std']:.3f}  (n={s['n']})")


def late_verifier_note(args, results: dict) -> str | None:
    """One line when the built-in world's PRM ends under the F1 of 80 that the default recipe is
    meant to reach: its first stage most likely left the plateau late (README, "How often the
    default learns in time"). None otherwise, and for --data, --quick and runs without it."""
    if args.data or args.quick or "reasonflux" not in results or results["reasonflux"]["f1"] >= 80:
        return None
    return (f"note: held-out F1 {results['reasonflux']['f1']:.1f} is under 80: this PRM has not learnt to "
            f"verify well yet. A tiny PRM can sit on a plateau for a long while before it does (README, "
            f"'How often the default learns in time'); the held-out lines above show how far its first "
            f"stage got. More first-stage steps (--steps) give it room, at about 0.2 s each on two cores.")


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.resume and not (args.out or args.work):
        raise RfprmError("--resume needs the --out (or --work) of the run to continue")
    if args.out:
        out = Path(args.out)
        work = Path(args.work) if args.work else Path("runs") / f"{out.name}-work"
    else:
        work = Path(args.work) if args.work else Path("runs") / f"train_prm-{time.strftime('%Y%m%d-%H%M%S')}"
        out = work / "prm"
    check_writable(out)
    check_writable(work / "x")
    if args.json:
        check_writable(args.json)
    t0 = time.time()
    init_dir = resolve_path(args.model)
    if args.init_prm:
        args.init_prm = str(resolve_path(args.init_prm))   # a missing one fails now, not after labelling
    if args.prm_layers is None:   # the --init-prm's depth; else 4 of tiny-policy's 6 (README); else all
        args.prm_layers = load_config(Path(args.init_prm)).num_hidden_layers if args.init_prm \
            else 4 if args.model == "tiny-policy" else 0
    tok = load_tokenizer(init_dir)
    lm = load_model(init_dir, device=args.device)
    if args.prm_layers:
        keep_layers(lm, args.prm_layers)
    if args.data:
        train = read_records(args.data, "trace", args.fields, args.skip_bad)
        val = read_records(args.val_data, "trace", args.fields, args.skip_bad) if args.val_data else []
        test = read_records(args.test_data, "trace", args.fields, args.skip_bad) if args.test_data else []
    else:
        train, val, test, used = world_splits(args)
    work.mkdir(parents=True, exist_ok=True)
    labelled = train if all("step_rewards" in r for r in train) \
        else label(train, args, args.device, work, "train")
    if args.policy_problems:
        if args.resume and (work / "labels_policy.jsonl").exists():
            own = read_records(work / "labels_policy.jsonl", "labelled")
        else:
            pool = policy_pool(args, used)
            own = label(pool, args, args.device, work, "policy") if pool else []
        print(f"{len(own)} distinct policy traces on {args.policy_problems} problems added to "
              f"{len(labelled)} teacher traces" + (f", each {args.policy_repeat} times" if args.policy_repeat > 1 else "")
              + ("" if own else " (none parsed as <think>...</think> traces)"))
        labelled = labelled + own * args.policy_repeat
    spec = PRMTrainSpec(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        lambda_step=args.lambda_step, lambda_final=args.lambda_final, lm_aux=args.lm_aux, bucket=args.bucket,
                        bf16=args.device.startswith("cuda") and not args.fp32, compile=args.compile)
    step_only = replace(spec, lambda_final=0.0)
    if args.marker_aux is None:   # the world's equation parser finds the steps' results in world traces
        args.marker_aux = 0.0 if args.data else 0.5
    marker = dict(marker_aux=args.marker_aux, marker_tokens=args.marker_tokens)   # the first (backbone-training) stage's, never the outcome RM's
    if args.first_stage_targets is None:   # verdicts first where the labels carry them (rfprm's do)
        has = all(len((r.get("label_parts") or {}).get("quality") or ()) == len(r.get("step_rewards") or [None])
                  for r in labelled)
        args.first_stage_targets = "quality" if has else "fused"
        if not has:
            print("first stage on the fused step rewards: not every training record carries the judge's "
                  "verdicts (label_parts.quality)")
    curriculum = args.first_stage_targets != "fused"
    first_records = first_stage_records(labelled, args.first_stage_targets) \
        if args.second_stage_steps and set(args.variants) - {"outcome"} else labelled

    def stages(name: str) -> list[tuple[list[dict], PRMTrainSpec, bool]]:
        """A variant's training stages: (records, spec, is it the shared first stage)."""
        if name == "outcome":
            return [(outcome_targets(labelled, world.is_correct), spec, False)]
        if not args.second_stage_steps:
            return [(labelled, replace(spec if name == "reasonflux" else step_only, **marker), False)]
        # Two stages: the trajectory term delays the step head's late jump (README), so the first
        # trains the step loss alone and the second adds it, from the first's weights at a lower lr.
        first = (first_records, replace(step_only, **marker), True)
        if name == "step-only" and not curriculum:
            return [first]                          # the reasonflux first stage is this ablation
        final = spec if name == "reasonflux" else step_only
        return [first, (labelled, replace(final, steps=args.second_stage_steps, lr=args.second_stage_lr,
                                          freeze_backbone=args.second_stage_head_only), False)]

    results, main_prm, shared = {}, None, None      # shared: the saved first stage, trained once
    for i, name in enumerate(args.variants):
        run_dir, plan = work / f"run_{i}", stages(name)
        prm, prm_dir = None, None                   # the current PRM, in memory or saved in prm_dir
        for k, (records, s, is_first) in enumerate(plan):
            saved = run_dir / "stage1"
            if is_first and shared is None and args.resume and (saved / "config.json").exists():
                shared = saved                      # the first stage finished before the interruption
            if is_first and shared is not None:
                prm, prm_dir = None, shared
                continue
            stage_dir = run_dir if k == 0 else run_dir / "stage2"
            tag = name if len(plan) == 1 else f"{name} stage {k + 1}"
            what = ("verdicts, step loss" if curriculum else "step loss") if is_first else "full loss"
            prm = train_prm_model(lm, tok, hide_eval_fields(records), s, args.layout, out_dir=stage_dir,
                                  resume=args.resume and (stage_dir / "train_state").exists(),
                                  desc=tag if len(plan) == 1 else f"{tag} ({what})",
                                  callback=progress_eval(args, val, test, tag, s.steps),
                                  init_prm=args.init_prm if k == 0 else prm_dir,
                                  marker_target=world.step_result if s.marker_aux else None)
            if is_first:
                prm.save(saved)
                shared = prm_dir = saved
        prm = prm if prm is not None else load_prm(prm_dir)
        prm.alpha = args.alpha
        if val and test:
            results[name] = dict(evaluate_prm(prm, val, test), alpha=prm.alpha)   # also sets prm.threshold on val
        prm.save(out if i == 0 else work / f"baseline_{i}")
        main_prm = main_prm or prm
    if results:
        print_table(results)
        note = late_verifier_note(args, results)
        if note:
            print("\n" + note)
    print(f"\nPRM written to {out} ({main_prm.describe()})\nlabels, baselines and state in {work}; "
          f"{time.time() - t0:.0f} s in all")
    table = {"results": results, "args": vars(args), "seconds": time.time() - t0}
    for path in [work / "eval.json"] + ([Path(args.json)] if args.json else []):
        with atomic_file(path) as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    cli_main(main)
