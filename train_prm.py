"""Train a ReasonFlux-PRM: label traces, train the PRM, choose its threshold, evaluate it.

With no arguments it runs on the built-in world on the CPU (about five minutes on two cores): a
pool of teacher traces is labelled (fused step rewards + template-guided trajectory reward from
`tiny-policy`), a PRM is trained from tiny-policy's weights in two stages, its threshold is
chosen on validation traces, and it is evaluated on held-out traces. `--variants` adds the
baselines trained the same way: the step-only ablation (λ_final = 0) and an outcome-only RM.
The recipe is a preset (rfprm/prm_recipe.py): `--show-preset` prints its fields, `--set` changes
them. Results go to a new directory under runs/.

    python train_prm.py                                   # the built-in world, the PRM alone
    python train_prm.py --preset world-long               # four times the training: F1 past 80, ~17 min
    python train_prm.py --variants reasonflux,step-only,outcome   # with both baselines
    python train_prm.py --quick                           # a one-minute version
    python train_prm.py --init-prm DIR --set steps=1000,lr=5e-4,second_stage_steps=0
                                                          # one more (fused) stage from a trained PRM
    python train_prm.py --set policy_problems=2000        # also train on the policy's own samples
    python train_prm.py --preset tiny-prm                 # tiny-prm's first stages (see rfprm.recipes)
    python train_prm.py --model DIR --data traces.jsonl --val-data v.jsonl --test-data t.jsonl

At scale: `--lora R` (--out is a PEFT adapter; python -m rfprm.lora merge), `--dry-run` (the memory
estimate), `torchrun --nproc_per_node N train_prm.py` (batch_size split into --grad-accum parts).

With --data (preset `data`: every layer, no marker auxiliary), traces that carry `step_rewards`
are used as they are; others are labelled with --judge (a local instruct model, default
--model) as the quality judge and --policy (default --model) for the template-guided rollouts.
Evaluation needs `first_error` in --val-data and --test-data.

Label parts, each chosen on its own: `--set encoder=ngram|DIR` (Φ), --judge / --expert (--data) or
`--set world_judge=noisy|oracle` (the world's LLM-like judge; `oracle` is its exact one, which no
real user has), and `--set tau=,n_negatives=,fusion_temperature=`. The marker auxiliary names the
model's own reading of each result (`marker_source=model`); `task`: the world's arithmetic, an oracle.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rfprm import cli, distributed
from rfprm.checkpoint import load_config, load_model
from rfprm.data import read_records, write_records
from rfprm.errors import RfprmError, atomic_file, check_writable, cli_main, resolve_path
from rfprm.labels import llm_labeller, sample_traces
from rfprm.prm_layout import STEP_TAG
from rfprm.prm_recipe import (PRESETS, check_recipe, check_sources, label_options, late_verifier_note, marker_targets,
                              parse_variants, quick, train_variants)
from rfprm.prm_train import format_results, hide_eval_fields, keep_layers, lora_depth, training_memory
from rfprm.task import TEXT_TASK
from rfprm.tokenizer import load_tokenizer
from rfprm.world.task import MAX_NEW_TOKENS, TASK as WORLD, fresh_problems, trace_splits, world_labeller


def parse_args(argv=None):
    ap = cli.make_parser(__doc__, "train_prm.py")
    cli.add_common(ap, "model", "data", "fields", "skip_bad", "out", "json", "seed", "device", "quick", "resume",
                   "threads", model="the LM whose backbone starts the PRM (default tiny-policy)",
                   data="JSONL traces to train on (default: the built-in world)",
                   out="the trained PRM's directory (default: runs/train_prm-<time>/prm)",
                   json="write the evaluation table here", resume="continue an interrupted run (same --out / --work)")
    ap.set_defaults(model="tiny-policy")
    ap.add_argument("--init-prm", metavar="DIR", help="start from this PRM's weights (one more stage)")
    ap.add_argument("--policy", metavar="DIR", help="the policy of the template-guided rollouts (default: --model)")
    ap.add_argument("--judge", metavar="DIR", help="--data: a local instruct model rating steps (default: --model)")
    ap.add_argument("--expert", metavar="DIR", help="--data: the model writing traces' templates (default: --policy)")
    ap.add_argument("--val-data", metavar="FILE", help="JSONL traces with first_error, for the threshold")
    ap.add_argument("--test-data", metavar="FILE", help="JSONL traces with first_error, for the evaluation")
    ap.add_argument("--work", metavar="DIR", help="labels, baselines and training state (default: the run "
                                                  "directory, or runs/<out name>-work for an explicit --out)")
    ap.add_argument("--variants", default="reasonflux", help="PRMs to train, the first is --out: reasonflux, step-only "
                    "(λ_final = 0), outcome (outcome-only RM), response-only (response steps only)")
    cli.add_scale_flags(ap, "the backbone (+ the head)", "; --out is then an adapter to merge")
    cli.add_preset_flags(ap, PRESETS, None)
    args = ap.parse_args(argv)
    cli.check_common(args)
    cli.check_scale_flags(args)
    if args.lora and args.init_prm:
        raise RfprmError("--lora adapts --model, not --init-prm: merge that PRM first or drop --lora")
    args.preset = args.preset or ("data" if args.data else "world")
    recipe, args.changed = cli.apply_sets(PRESETS[args.preset], args.set)
    args.recipe = quick(check_recipe(recipe)) if args.quick else check_recipe(recipe)
    check_sources(args.recipe, args.changed, bool(args.data), bool(args.judge or args.expert))
    args.variants = parse_variants(args.variants)
    return args


def run_dirs(args) -> tuple[Path, Path]:
    """(--out, --work), both checked writable before anything slow starts."""
    if args.resume and not (args.out or args.work):
        raise RfprmError("--resume needs the --out (or --work) of the run to continue")
    if args.out:
        out = Path(args.out)
        work = Path(args.work) if args.work else Path("runs") / f"{out.name}-work"
    else:
        work = Path(args.work or cli.run_name("train_prm"))
        out = work / "prm"
    check_writable(out)
    check_writable(work / "x")
    if args.json:
        check_writable(args.json)
    return out, work


def label(records: list[dict], args, work: Path, name: str) -> list[dict]:
    """Fused step labels + trajectory reward, computed once per work directory."""
    path, r = work / f"labels_{name}.jsonl", args.recipe
    if args.resume and path.exists():
        return read_records(path, "labelled")
    if not distributed.is_main():      # torchrun: rank 0 labels (one labeller, one set of labels)
        distributed.barrier()
        return read_records(path, "labelled")
    policy_dir = resolve_path(args.policy or args.model)
    options = label_options(r, args.seed, args.device)
    if args.data:
        judge_dir = resolve_path(args.judge or args.model)
        expert = {}
        if args.expert:
            expert_dir = resolve_path(args.expert)
            expert = dict(expert_model=load_model(expert_dir, device=args.device),
                          expert_tok=load_tokenizer(expert_dir))
        labeller = llm_labeller(load_model(judge_dir, device=args.device), load_tokenizer(judge_dir),
                                load_model(policy_dir, device=args.device), load_tokenizer(policy_dir),
                                is_correct=TEXT_TASK.is_correct, **expert, **options)
        labelled = labeller(records)
    else:
        labeller = world_labeller(load_model(policy_dir, device=args.device), load_tokenizer(policy_dir),
                                  judge=r.world_judge, **options)
        labelled = labeller(hide_eval_fields(records))
    write_records(path, labelled)
    distributed.barrier()              # the other ranks read the file now
    return labelled


def policy_traces(args, work: Path, used: frozenset) -> list[dict]:
    """The policy's own labelled traces on policy_problems fresh world problems (none of the
    trace splits' or the reserved ones), sampled as bon.py samples them."""
    r = args.recipe
    if args.resume and (work / "labels_policy.jsonl").exists():
        return read_records(work / "labels_policy.jsonl", "labelled")
    policy_dir = resolve_path(args.policy or args.model)
    policy, ptok = load_model(policy_dir, device=args.device), load_tokenizer(policy_dir)
    traces = sample_traces(policy, ptok, fresh_problems(r.policy_problems, args.seed, used), r.policy_samples,
                           WORLD.prompt, MAX_NEW_TOKENS, seed=args.seed + 1, progress=True)
    # a sample that wrote the step marker itself cannot be laid out (1 of 5,685 distinct ones here)
    traces = [t for t in traces if STEP_TAG not in t["trajectory"] + t["response"]]
    return label(traces, args, work, "policy") if traces else []


def main(argv=None):
    args = parse_args(argv)
    if args.show_preset:
        print(cli.show_preset(args.preset, args.recipe))
        return
    run(args)


def run(args):
    r, task, t0, lora = args.recipe, TEXT_TASK if args.data else WORLD, time.time(), cli.lora_config(args)
    init_dir = resolve_path(args.model)
    if args.init_prm:
        args.init_prm = str(resolve_path(args.init_prm))   # a missing one fails now, not after labelling
    cfg, tok = load_config(init_dir), load_tokenizer(init_dir)
    layers = r.prm_layers   # --init-prm: its own depth, unless prm_layers is --set
    if args.init_prm and "prm_layers" not in args.changed:
        layers = load_config(Path(args.init_prm)).num_hidden_layers
    layers = lora_depth(cfg.num_hidden_layers, layers, lora, "prm_layers" in args.changed)
    if layers:
        cfg = cfg.replace(num_hidden_layers=layers)

    # ---- traces, the memory estimate ----
    if args.data:
        read = lambda path: read_records(path, "trace", args.fields, args.skip_bad) if path else []  # noqa: E731
        train, val, test = read(args.data), read(args.val_data), read(args.test_data)
    else:
        (train, val, test), used = trace_splits((r.n_train, r.n_val, r.n_test), args.seed)
    if cli.memory_check(cfg, training_memory(cfg, tok, train, r.layout, r.batch_size, args.grad_accum, lora,
                                             args.device), args):
        return                         # --dry-run, or an unsplittable batch raised: nothing written
    out, work = run_dirs(args)
    lm = load_model(init_dir, device=args.device)
    if layers:
        keep_layers(lm, layers)

    # ---- labels ----
    work.mkdir(parents=True, exist_ok=True)
    labelled = train if all("step_rewards" in x for x in train) else label(train, args, work, "train")
    if r.policy_problems:
        own = policy_traces(args, work, used)
        print(f"{len(own)} distinct policy traces on {r.policy_problems} problems added to {len(labelled)} "
              f"teacher traces" + (f", each {r.policy_repeat} times" if r.policy_repeat > 1 else "")
              + ("" if own else " (none parsed as <think>...</think> traces)"))
        labelled = labelled + own * r.policy_repeat

    labelled, marker_target = marker_targets(labelled, r, task.step_result, init_dir, work, args.resume, args.device)

    # ---- train, evaluate, report (files and tables from rank 0 only) ----
    options = dict(grad_accum=args.grad_accum, lora=lora, lora_base=str(init_dir))
    results, main_prm = train_variants(lm, tok, labelled, r, args.variants, work, out=out, val=val, test=test,
                                       seed=args.seed, bf16=args.device.startswith("cuda") and not r.fp32,
                                       resume=args.resume, init_prm=args.init_prm, marker_target=marker_target,
                                       is_correct=task.is_correct, train_options=options)
    if not distributed.is_main():
        return                         # rank 0 writes the tables
    if results:
        print(format_results(results))
        note = None if args.data or args.quick else late_verifier_note(results, r.batch_size)
        if note:
            print("\n" + note)
    kind = f"a LoRA adapter on {init_dir}; merge: python -m rfprm.lora merge" if lora else main_prm.describe()
    print(f"\nPRM written to {out} ({kind})\nlabels, baselines and state in {work}; "
          f"{time.time() - t0:.0f} s in all")
    table = {"results": results, "args": {**vars(args), "recipe": vars(r), "changed": sorted(args.changed)},
             "seconds": time.time() - t0}
    for path in [work / "eval.json"] + ([Path(args.json)] if args.json else []):
        with atomic_file(path) as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    cli_main(cli.under_torchrun(main))   # alone, or one of torchrun's processes
