"""Offline data selection with a ReasonFlux-PRM: score a pool of traces, keep the top k.

With no arguments it runs on the built-in world (CPU, a minute): a pool of mixed-teacher traces
is scored by `tiny-prm`, ranked by mean step score + α · trajectory score, and the top k are
written as JSONL. With --sft it also fine-tunes students from `tiny-base` on k traces chosen by
each method -- random, outcome filter, step-only PRM, ReasonFlux -- and reports their held-out
accuracy over several seeds (a default --sft run, 12 students: 540-640 s on two CPU cores).

    python select_data.py                                 # select from the built-in pool
    python select_data.py --sft --json runs/select.json   # the student comparison
    python select_data.py --quick --sft                   # a one-minute version
    python select_data.py --sft --baseline-prm response-only=runs/prm-resp   # another PRM's students
    python select_data.py --prm DIR --data pool.jsonl --k 1000 --out top.jsonl
    python select_data.py --prm DIR --data pool.jsonl --sft --model DIR --eval-data problems.jsonl
    torchrun --nproc_per_node 2 select_data.py --sft --lora 8   # LoRA students over 2 processes

The teacher and first error of a world trace are hidden from every scorer; they are used only
to print what each method picked. The step-only method is the same PRM with α = 0 unless
--step-prm names a separately trained λ_final = 0 PRM. See rfprm/selection.py.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from rfprm import cli, distributed
from rfprm.bon import parse_baselines
from rfprm.checkpoint import load_model
from rfprm.data import read_records
from rfprm.errors import RfprmError, atomic_file, cli_main, parse_alphas, resolve_path
from rfprm.prm import load_prm
from rfprm.selection import (METHODS, StudentSpec, compare_students, format_picks, format_students, outcome_passes,
                             parse_methods, rank, result_table, select, student_memory, teacher_table, write_top)
from rfprm.task import TEXT_TASK
from rfprm.tokenizer import load_tokenizer
from rfprm.world.task import EVAL_RESERVE, MAX_NEW_TOKENS, TASK as WORLD, eval_problems, held_out_texts
from rfprm.world import make_traces

SCORED_FIELDS = ("problem", "trajectory", "response")   # all a scorer ever sees of a trace


@dataclass
class SelectPreset:
    pool: int = 4000                # the built-in pool's size; with --data, set it to use the first N records
    sft_steps: int = 250            # optimizer steps per student
    sft_batch_size: int = 16
    lr: float = 3e-3                # student learning rate (chosen on validation problems: docs/results.md)
    eval_problems: int = 200        # reserved held-out world problems (at most EVAL_RESERVE)
    max_new_tokens: int = MAX_NEW_TOKENS  # students' answer length limit
    score_batch_size: int = 32      # traces per PRM forward pass
    bucket: int = 8                 # student batches drawn together and sorted by length (1: plain random)
    compile: bool = True            # students train under torch.compile (false: the plain eager loop)


PRESETS = {"default": SelectPreset(),
           "quick": SelectPreset(pool=48, sft_steps=8, sft_batch_size=8, eval_problems=16, compile=False)}


def parse_args(argv=None):
    ap = cli.make_parser(__doc__, "select_data.py")
    cli.add_common(ap, "prm", "data", "fields", "skip_bad", "out", "json", "seed", "device", "quick", "threads",
                   prm="the PRM that scores the pool (default tiny-prm)", data="JSONL pool of traces "
                   "(default: the built-in world's mixed teachers)", out="the top k as JSONL (default: "
                   "runs/select-<time>.jsonl)", json="write the student table here (implies --sft)")
    ap.set_defaults(prm="tiny-prm")
    ap.add_argument("--model", "--base", dest="model", metavar="DIR|NAME",
                    help="--sft: the base every student starts from (default tiny-base)")
    ap.add_argument("--step-prm", metavar="DIR", help="a λ_final = 0 PRM for step-only (default: --prm, α = 0)")
    ap.add_argument("--baseline-prm", action="append", default=[], metavar="NAME=DIR",
                    help="another PRM's picks (and students), by mean step score")
    ap.add_argument("--k", type=int, help="traces to keep (default 1000; 12 with --quick)")
    ap.add_argument("--alpha", type=float, default=1.0, metavar="A",
                    help="weight of the trajectory score (default 1.0, the paper's)")
    ap.add_argument("--sft", action="store_true", help="train and evaluate students for each method")
    ap.add_argument("--methods", default=",".join(METHODS), help="--sft: methods to compare, comma-separated")
    ap.add_argument("--alpha-sweep", metavar="LIST", help="--sft: also ReasonFlux students for each α, e.g. 0.5,1.5")
    ap.add_argument("--seeds", type=int, metavar="N", help="--sft: students per method (default 3; 2 with --quick)")
    ap.add_argument("--eval-data", metavar="FILE", help="--sft: JSONL problems {problem, answer} to evaluate on "
                                                        "(default: the world's reserved problems)")
    cli.add_scale_flags(ap, "each student")
    cli.add_preset_flags(ap, PRESETS, None)
    args = ap.parse_args(argv)
    args.preset = args.preset or ("quick" if args.quick else "default")
    args.settings, args.changed = cli.apply_sets(PRESETS[args.preset], args.set)
    check_args(args)
    return args


def check_args(args) -> None:
    cli.check_common(args)
    s = args.settings
    if args.model is not None and not (args.sft or args.json):
        raise RfprmError("--model is the base every student starts from: it is used only with --sft "
                         "(add --sft to train students on each selection, or leave --model out)")
    args.sft = args.sft or bool(args.json)
    cli.check_scale_flags(args, args.sft, "are about the students: add --sft")
    args.model = args.model or "tiny-base"
    args.k = args.k if args.k is not None else 12 if args.quick else 1000
    args.seeds = args.seeds if args.seeds is not None else 2 if args.quick else 3
    for name, value in [("--k", args.k), ("--seeds", args.seeds), ("pool", s.pool), ("sft_steps", s.sft_steps),
                        ("sft_batch_size", s.sft_batch_size), ("eval_problems", s.eval_problems),
                        ("max_new_tokens", s.max_new_tokens), ("score_batch_size", s.score_batch_size),
                        ("bucket", s.bucket)]:
        cli.at_least(value, 1, name)
    cli.finite(s.lr, "lr", positive=True)
    cli.finite(args.alpha, "--alpha")
    args.methods = parse_methods(args.methods)
    args.baselines = parse_baselines(args.baseline_prm, reserved=METHODS + ("step-only",))
    args.alpha_sweep = parse_alphas(args.alpha_sweep) if args.alpha_sweep else []
    if args.eval_data is None and s.eval_problems > EVAL_RESERVE:
        raise RfprmError(f"eval_problems: at most {EVAL_RESERVE} reserved problems, got {s.eval_problems}")
    if not args.data and (args.fields or args.skip_bad):
        raise RfprmError("--fields and --skip-bad apply to --data; the built-in pool needs neither")
    args.out = args.out or cli.run_name("select") + ".jsonl"
    cli.check_output(args.out, "--out")
    if args.json:
        cli.check_output(args.json, "--json")


def load_pool(args) -> list[dict]:
    if not args.data:
        return make_traces(args.settings.pool, args.seed, exclude=held_out_texts())
    pool = read_records(args.data, "trace", args.fields, args.skip_bad)
    if pool.n_skipped:
        print(f"skipped {pool.n_skipped} bad lines of {args.data} (first: {pool.skipped[0]})")
    return list(pool)[: args.settings.pool] if "pool" in args.changed else list(pool)


def load_eval(args) -> list[tuple[str, str]]:
    if args.eval_data:
        return [(r["problem"], r["answer"]) for r in read_records(args.eval_data, "problem")]
    return [(p.text, str(p.answer)) for p in eval_problems(args.settings.eval_problems)]


def score_pool(path, pool, args, what="PRM"):
    prm = load_prm(path, device=args.device)
    print(f"{what}: {prm.describe()}")
    return prm.score_batch([{k: r[k] for k in SCORED_FIELDS} for r in pool],
                           batch_size=args.settings.score_batch_size, progress=True)


def main(argv=None):
    args = parse_args(argv)
    if args.show_preset:
        print(cli.show_preset(args.preset, args.settings))
        return
    s, task, t0, alpha = args.settings, TEXT_TASK if args.data else WORLD, time.time(), args.alpha
    # ---- everything that can fail fast, before any slow work ----
    pool = load_pool(args)
    if not pool:
        raise RfprmError("the pool is empty: nothing to select from")
    if args.k > len(pool):
        raise RfprmError(f"--k {args.k} is larger than the pool ({len(pool)} traces); expected k <= {len(pool)}")
    prm_path = resolve_path(args.prm)
    step_prm_path = resolve_path(args.step_prm) if args.step_prm else None
    baseline_paths = {name: resolve_path(d) for name, d in args.baselines.items()}
    spec = StudentSpec(steps=s.sft_steps, batch_size=s.sft_batch_size, lr=s.lr, max_new_tokens=s.max_new_tokens,
                       bf16=args.device.startswith("cuda"), lora=cli.lora_config(args), grad_accum=args.grad_accum,
                       bucket=s.bucket, compile=s.compile)
    if args.sft:
        base_dir = resolve_path(args.model)
        if cli.memory_check(*student_memory(base_dir, pool, spec, args.device), args):
            return                                          # --dry-run: nothing written
        seen = {r["problem"].strip() for r in pool} & {text.strip() for text, _ in load_eval(args)}
        if seen:
            print(f"warning: {len(seen)} evaluation problems are also in the pool; students may have seen them")
        if "outcome" in args.methods:
            outcome_passes(pool, task.is_correct)

    # ---- score and select ----
    scores = score_pool(prm_path, pool, args)
    step_scores = score_pool(step_prm_path, pool, args, "step-only PRM") if step_prm_path else None
    baselines = {name: score_pool(d, pool, args, name) for name, d in baseline_paths.items()}
    has_steps = any(x.steps for x in step_scores or scores)   # a scalar-head PRM has no step scores
    if args.sft and "step_only" in args.methods and not has_steps:
        raise RfprmError("the step-only method needs step scores, but the PRM has a scalar head; "
                         "give --step-prm DIR or leave step_only out of --methods")
    top = write_top(args.out, pool, scores, alpha, args.k)
    how = f"mean step + {alpha:g} · trajectory" if any(x.steps for x in scores) else "trajectory score (scalar head)"
    print(f"wrote the top {args.k} of {len(pool)} traces by {how} to {args.out}")
    picks = {f"ReasonFlux (α={alpha:g})": top}
    if has_steps:
        picks["step-only PRM (α=0)"] = select("step_only", pool, args.k, scores=scores, step_scores=step_scores).indices
    picks.update({name: rank(sc, 0.0)[:args.k] for name, sc in baselines.items()})   # by mean step score
    picks[f"random (seed {args.seed})"] = select("random", pool, args.k, seed=args.seed).indices
    if all("answer" in r for r in pool):
        picks[f"outcome (seed {args.seed})"] = select("outcome", pool, args.k, seed=args.seed,
                                                      is_correct=task.is_correct).indices
    picks["whole pool"] = list(range(len(pool)))
    print(format_picks(pool, picks, task.teachers, task.is_correct))
    if not args.sft:
        print(f"\n{time.time() - t0:.0f} s in all (add --sft to compare students trained on each selection)")
        return

    # ---- students ----
    tok, base = load_tokenizer(base_dir), load_model(base_dir, device=args.device)
    problems, seeds, t1 = load_eval(args), [args.seed + i for i in range(args.seeds)], time.time()
    results, notes, n_students = compare_students(base, tok, pool, problems, spec, methods=args.methods, seeds=seeds,
                                                  k=args.k, scores=scores, step_scores=step_scores, alpha=alpha,
                                                  alpha_sweep=args.alpha_sweep, baselines=baselines, task=task)
    per_student = (time.time() - t1) / max(1, n_students)
    print(format_students(results, notes, args.seeds, len(problems), alpha, args.alpha_sweep))
    seconds = time.time() - t0
    print(f"\n{seconds:.0f} s in all, {per_student:.1f} s per student")
    if args.json and distributed.is_main():
        chosen = teacher_table(pool, picks, task.teachers) if any("teacher" in r for r in pool) else {}
        table = result_table(results, notes, alpha=alpha, alpha_sweep=args.alpha_sweep, k=args.k, n_pool=len(pool),
                             n_problems=len(problems), seeds=seeds, picks=chosen)
        table.update(seconds=seconds, seconds_per_student=per_student,
                     args={**vars(args), "settings": vars(s), "changed": sorted(args.changed)})
        with atomic_file(args.json) as f:
            json.dump(table, f, indent=2, ensure_ascii=False)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    cli_main(cli.under_torchrun(main))   # alone, or one of torchrun's processes
