"""Offline data selection with a ReasonFlux-PRM: score a pool of traces, keep the top k.

With no arguments it runs on the built-in world (CPU, a minute): a pool of mixed-teacher traces
is scored by `tiny-prm`, ranked by mean step score + α · trajectory score, and the top k are
written as JSONL. With --sft it also fine-tunes students from `tiny-base` on k traces chosen by
each method -- random, outcome filter, step-only PRM, ReasonFlux -- and reports their held-out
accuracy over several seeds (a default --sft run, 12 students: 1,615 s on one CPU thread
while another job held the second core).

    python select_data.py                                 # select from the built-in pool
    python select_data.py --sft --json runs/select.json   # the student comparison
    python select_data.py --sft --alpha-sweep 0.1,0.5,1.0,1.5
    python select_data.py --quick --sft                   # a one-minute version
    python select_data.py --prm DIR --data pool.jsonl --k 1000 --out top.jsonl

The teacher and first error of a world trace are hidden from every scorer; they are used only
to print what each method picked. The step-only method is the same PRM with α = 0 unless
--step-prm names a separately trained λ_final = 0 PRM. See rfprm/selection.py.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rfprm import world
from rfprm.checkpoint import load_model
from rfprm.data import read_records
from rfprm.errors import RfprmError, atomic_file, check_writable, cli_main, parse_alphas
from rfprm.paths import resolve_path
from rfprm.prm import load_prm
from rfprm.recipes import EVAL_RESERVE, MAX_NEW_TOKENS, eval_problems, held_out_texts
from rfprm.selection import (LABELS, METHODS, StudentSpec, compare, outcome_passes, rank, select,
                             selection_score, student_accuracy, summarize, teacher_table)
from rfprm.tokenizer import load_tokenizer

SCORED_FIELDS = ("problem", "trajectory", "response")   # all a scorer ever sees of a trace
# flag: (default, --quick value); None means "not given", so --quick fills only unset flags
SIZES = {"pool": (4000, 48), "k": (1000, 12), "seeds": (3, 2), "sft_steps": (400, 8),
         "sft_batch_size": (16, 8), "eval_problems": (200, 16)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm", default="tiny-prm", help="the PRM that scores the pool (dir or shipped name)")
    ap.add_argument("--step-prm", help="a separately trained step-only (λ_final=0) PRM for the step-only "
                                       "method (default: --prm with α = 0)")
    ap.add_argument("--data", help="JSONL pool of traces (default: the built-in world's mixed teachers)")
    ap.add_argument("--fields", help="map field names: problem=question,trajectory=...")
    ap.add_argument("--skip-bad", action="store_true", help="skip malformed lines (counted) instead of stopping")
    ap.add_argument("--pool", type=int, help="built-in pool size; with --data, use at most the first N "
                                             f"records (default {SIZES['pool'][0]} / all of --data)")
    ap.add_argument("--k", type=int, help=f"traces to keep (default {SIZES['k'][0]})")
    ap.add_argument("--alpha", type=float, default=1.0,
                    help="weight of the trajectory score (default 1.0, the paper's value for data selection; "
                         "a PRM's own α, which bon.py uses, may be tuned for Best-of-N instead)")
    ap.add_argument("--out", help="the top k as JSONL (default: runs/select-<time>.jsonl)")
    ap.add_argument("--json", help="write the student table here (implies --sft)")
    ap.add_argument("--sft", action="store_true", help="train and evaluate students for each method")
    ap.add_argument("--methods", default=",".join(METHODS), help="--sft: methods to compare, comma-separated")
    ap.add_argument("--alpha-sweep", help="--sft: also train ReasonFlux students for each α, e.g. 0.1,0.5,1.0,1.5")
    ap.add_argument("--base", "--model", dest="base", default="tiny-base",
                    help="--sft: the model every student starts from (dir or shipped name)")
    ap.add_argument("--seeds", type=int, help=f"--sft: students per method, seeds --seed, --seed+1, ... "
                                              f"(default {SIZES['seeds'][0]})")
    ap.add_argument("--sft-steps", type=int, help=f"--sft: optimizer steps per student (default {SIZES['sft_steps'][0]})")
    ap.add_argument("--sft-batch-size", type=int, help=f"default {SIZES['sft_batch_size'][0]}")
    ap.add_argument("--lr", type=float, default=2e-3, help="--sft: student learning rate")
    ap.add_argument("--eval-problems", type=int, help="--sft: reserved held-out world problems "
                                                      f"(default {SIZES['eval_problems'][0]}, at most {EVAL_RESERVE})")
    ap.add_argument("--eval-data", help="--sft: JSONL problems {problem, answer} to evaluate on instead")
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="--sft: answer length limit")
    ap.add_argument("--score-batch-size", type=int, default=32, help="traces per PRM forward pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="a one-minute version (for the tests)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    for name, (default, quick) in SIZES.items():
        if getattr(args, name) is None and not (name == "pool" and args.data):
            setattr(args, name, quick if args.quick else default)
    for name in list(SIZES) + ["max_new_tokens", "score_batch_size"]:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RfprmError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.seed < 0:
        raise RfprmError(f"--seed must be >= 0, got {args.seed}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise RfprmError(f"--lr must be a positive number, got {args.lr}")
    if not math.isfinite(args.alpha):
        raise RfprmError(f"--alpha must be a finite number, got {args.alpha}")
    args.sft = args.sft or bool(args.json)
    args.methods = parse_methods(args.methods)
    args.alpha_sweep = parse_alphas(args.alpha_sweep) if args.alpha_sweep else []
    if args.eval_data is None and args.eval_problems > EVAL_RESERVE:
        raise RfprmError(f"--eval-problems: at most {EVAL_RESERVE} reserved problems, got {args.eval_problems}")
    return args


def parse_methods(spec: str) -> list[str]:
    methods = [m.strip().replace("-", "_") for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise RfprmError(f"--methods: unknown method {bad[0] if bad else spec!r}; expected a comma-separated "
                         f"list of {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def check_output(path: Path, what: str) -> Path:
    """check_writable, plus the two mistakes it lets through: a directory, or a file on the way."""
    if path.is_dir():
        raise RfprmError(f"{what} {path} is a directory; expected a file name")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise RfprmError(f"cannot write {what} {path}: {parent} is a file, not a directory")
    return check_writable(path)


def load_pool(args) -> list[dict]:
    if args.data:
        pool = read_records(args.data, "trace", args.fields, args.skip_bad)
        if pool.n_skipped:
            print(f"skipped {pool.n_skipped} bad lines of {args.data} (first: {pool.skipped[0]})")
        return list(pool)[: args.pool] if args.pool else list(pool)
    if args.fields or args.skip_bad:
        raise RfprmError("--fields and --skip-bad apply to --data; the built-in pool needs neither")
    return world.make_traces(args.pool, args.seed, exclude=held_out_texts())


def load_eval(args) -> list[tuple[str, str]]:
    if args.eval_data:
        return [(r["problem"], r["answer"]) for r in read_records(args.eval_data, "problem")]
    return [(p.text, str(p.answer)) for p in eval_problems(args.eval_problems)]


def score_pool(prm_path, pool, args, what="PRM"):
    prm = load_prm(prm_path, device=args.device)
    print(f"{what}: {prm.describe()}")
    scores = prm.score_batch([{k: r[k] for k in SCORED_FIELDS} for r in pool],
                             batch_size=args.score_batch_size, progress=True)
    return scores


def write_top(path: Path, pool, scores, alpha, k) -> list[int]:
    top = rank(scores, alpha)[:k]
    with atomic_file(path) as f:
        for i in top:
            rec = {**pool[i], "prm_steps": scores[i].steps, "prm_trajectory": scores[i].trajectory,
                   "prm_total": selection_score(scores[i], alpha)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return top


def print_picks(pool, picks: dict[str, list[int]]):
    """What each method picked: teacher counts (world pools) and the share with a right answer."""
    has_teacher = any("teacher" in r for r in pool)
    has_answer = all("answer" in r for r in pool)
    table = teacher_table(pool, picks) if has_teacher else {name: {} for name in picks}
    right = outcome_passes(pool) if has_answer else None
    teachers = list(next(iter(table.values())))
    print(f"\n{'selection':<26}" + "".join(f"{t:>11}" for t in teachers) + (f"{'right ans.':>12}" if right else ""))
    for name, counts in table.items():
        line = f"{name:<26}" + "".join(f"{counts.get(t, 0):>11}" for t in teachers)
        if right:
            line += f"{100 * sum(right[i] for i in picks[name]) / len(picks[name]):>11.1f}%"
        print(line)


def run_students(args, pool, scores, step_scores, alpha):
    """Every (method or α, seed) student; -> ({name: summary}, {name: note}, seconds per student,
    number of evaluation problems)."""
    base_dir = resolve_path(args.base)
    tok, base = load_tokenizer(base_dir), load_model(base_dir, device=args.device)
    problems = load_eval(args)
    spec = StudentSpec(steps=args.sft_steps, batch_size=args.sft_batch_size, lr=args.lr,
                       max_new_tokens=args.max_new_tokens, bf16=args.device.startswith("cuda"))
    seeds = [args.seed + s for s in range(args.seeds)]
    runs = [(m, m, alpha) for m in args.methods]
    runs += [(f"reasonflux α={a:g}", "reasonflux", a) for a in args.alpha_sweep
             if not (a == alpha and "reasonflux" in args.methods)]
    results, notes, t0, n_done = {}, {}, time.time(), 0
    for name, method, a in runs:
        accs = []
        for seed in seeds:
            chosen = select(method, pool, args.k, scores=scores, step_scores=step_scores, alpha=a, seed=seed)
            if chosen.note:
                notes[name] = chosen.note
            n_done += 1
            tqdm.write(f"[{n_done}/{len(runs) * len(seeds)}] student: {name}, seed {seed}")
            accs.append(student_accuracy(base, tok, [pool[i] for i in chosen.indices], problems, spec,
                                         seed, desc=f"{name} s{seed}"))
        results[name] = summarize(accs)
    for a in args.alpha_sweep:  # the main α's students stand for its sweep entry
        if a == alpha and "reasonflux" in results:
            results[f"reasonflux α={a:g}"] = results["reasonflux"]
    return results, notes, (time.time() - t0) / max(1, n_done), len(problems)


def print_students(results, notes, n_seeds, n_problems, alpha, sweep):
    print(f"\nstudents: held-out accuracy % on {n_problems} problems, mean ± std over {n_seeds} seeds")
    print(f"{'method':<26}{'mean':>7}{'std':>7}   per seed")
    rows = [(LABELS[m] + (f" (α={alpha:g})" if m == "reasonflux" else ""), results[m])
            for m in METHODS if m in results]
    rows += [(f"ReasonFlux (α={a:g}) sweep", results[f"reasonflux α={a:g}"]) for a in sweep]
    for label, r in rows:
        print(f"{label:<26}{100 * r['mean']:>7.1f}{100 * r['std']:>7.1f}   "
              + " ".join(f"{100 * v:5.1f}" for v in r["per_seed"]))
    for name, note in notes.items():
        print(f"note ({name}): {note}")
    if "reasonflux" in results and "random" in results:
        c = compare(results["reasonflux"], results["random"])
        verdict = {True: "beyond the seed spread", False: "not beyond the seed spread",
                   None: "one seed: no spread to judge by"}[c["beyond_spread"]]
        print(f"ReasonFlux - random: {100 * c['gap']:+.1f} points; seed spread (std + std) "
              f"{100 * c['spread']:.1f}: {verdict}")


def result_table(args, results, notes, alpha, n_pool, n_problems, picks, seconds, per_student) -> dict:
    """The --json table: {"accuracy": {method: mean}} first, then spreads, sweep and context."""
    methods = [m for m in METHODS if m in results]
    table = {"accuracy": {m: results[m]["mean"] for m in methods},
             "std": {m: results[m]["std"] for m in methods},
             "per_seed": {m: results[m]["per_seed"] for m in methods},
             "alpha": alpha, "k": args.k, "pool": n_pool, "eval_problems": n_problems,
             "seeds": [args.seed + s for s in range(args.seeds)], "notes": notes,
             "alpha_sweep": {f"{a:g}": results[f"reasonflux α={a:g}"] for a in args.alpha_sweep},
             "picks": picks, "seconds": seconds, "seconds_per_student": per_student, "args": vars(args)}
    if "reasonflux" in results and "random" in results:
        table["reasonflux_vs_random"] = compare(results["reasonflux"], results["random"])
    return table


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out) if args.out else Path("runs") / f"select-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    check_output(out, "--out")
    if args.json:
        check_output(Path(args.json), "--json")
    # ---- everything that can fail fast, before any slow work ----
    pool = load_pool(args)
    if not pool:
        raise RfprmError("the pool is empty: nothing to select from")
    if args.k > len(pool):
        raise RfprmError(f"--k {args.k} is larger than the pool ({len(pool)} traces); expected k <= {len(pool)}")
    prm_path = resolve_path(args.prm)
    step_prm_path = resolve_path(args.step_prm) if args.step_prm else None
    if args.sft:
        resolve_path(args.base)
        seen = {r["problem"].strip() for r in pool} & {text.strip() for text, _ in load_eval(args)}
        if seen:
            print(f"warning: {len(seen)} evaluation problems are also in the pool; students may have seen them")
        if "outcome" in args.methods:
            outcome_passes(pool)

    scores = score_pool(prm_path, pool, args)
    alpha = args.alpha
    step_scores = score_pool(step_prm_path, pool, args, "step-only PRM") if step_prm_path else None
    if args.sft and "step_only" in args.methods and not any(s.steps for s in step_scores or scores):
        raise RfprmError("the step-only method needs step scores, but the PRM has a scalar head; "
                         "give --step-prm DIR or leave step_only out of --methods")
    top = write_top(out, pool, scores, alpha, args.k)
    how = f"mean step + {alpha:g} · trajectory" if any(s.steps for s in scores) else "trajectory score (scalar head)"
    print(f"wrote the top {args.k} of {len(pool)} traces by {how} to {out}")

    picks = {f"ReasonFlux (α={alpha:g})": top}
    if any(s.steps for s in step_scores or scores):   # a scalar-head PRM has no step scores
        picks["step-only PRM (α=0)"] = select("step_only", pool, args.k, scores=scores,
                                              step_scores=step_scores).indices
    picks[f"random (seed {args.seed})"] = select("random", pool, args.k, seed=args.seed).indices
    if all("answer" in r for r in pool):
        picks[f"outcome (seed {args.seed})"] = select("outcome", pool, args.k, seed=args.seed).indices
    picks["whole pool"] = list(range(len(pool)))
    print_picks(pool, picks)
    if not args.sft:
        print(f"\n{time.time() - t0:.0f} s in all (add --sft to compare students trained on each selection)")
        return
    results, notes, per_student, n_problems = run_students(args, pool, scores, step_scores, alpha)
    print_students(results, notes, args.seeds, n_problems, alpha, args.alpha_sweep)
    seconds = time.time() - t0
    print(f"\n{seconds:.0f} s in all, {per_student:.1f} s per student")
    if args.json:
        table = result_table(args, results, notes, alpha, len(pool), n_problems,
                             teacher_table(pool, picks) if any("teacher" in r for r in pool) else {},
                             seconds, per_student)
        with atomic_file(args.json) as f:
            json.dump(table, f, indent=2, ensure_ascii=False)
        print(f"wrote {args.json}")

if __name__ == "__main__":
    cli_main(main)
