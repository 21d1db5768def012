"""Best-of-N with a process reward model: sample N answers per problem, pick one, check it.

With no arguments it runs on the built-in world (CPU, minutes): 200 fresh problems from the
reserved evaluation set, 16 samples each from `tiny-policy` at temperature 1, scored by
`tiny-prm`. For N in 1, 2, 4, 8, 16 it reports the accuracy of a random pick, majority vote,
PRM step aggregations (min, last, mean), the ReasonFlux total (mean step + alpha * trajectory,
alpha from the PRM's checkpoint unless --alpha: 0.1 for tiny-prm, chosen on validation
problems), an outcome RM when --orm is given, and the oracle pass@N. Every N is estimated from
the same 16 samples by averaging over subsets; the ± is a bootstrap standard error over problems.

    python bon.py                                        # the built-in world
    python bon.py --json runs/bon.json                   # + the table as JSON and a PNG plot
    python bon.py --data val.jsonl --alpha-sweep 0,0.1,0.25,0.5,1   # choose alpha on other problems
    python bon.py --model DIR --prm DIR --data problems.jsonl --device cuda

--data takes {"problem", "answer"} JSONL (--fields maps other names). --out (default
runs/bon-<time>/samples.jsonl) keeps every sample with its answer and scores.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from rfprm import world
from rfprm.bon import (Method, bon_curve, default_methods, format_table, make_candidates, plot_curve,
                       reasonflux_score, score_candidates)
from rfprm.checkpoint import load_model
from rfprm.data import read_records, write_records
from rfprm.errors import RfprmError, atomic_file, check_writable, cli_main, parse_alphas
from rfprm.generate import chat_complete
from rfprm.paths import resolve_path
from rfprm.prm import load_prm
from rfprm.recipes import MAX_NEW_TOKENS, eval_problems
from rfprm.tokenizer import load_tokenizer

DEFAULT_N = (1, 2, 4, 8, 16)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-policy", help="policy that samples the answers (dir or shipped name)")
    ap.add_argument("--prm", default="tiny-prm", help="process reward model (dir or shipped name)")
    ap.add_argument("--orm", help="outcome RM: any PRM checkpoint, its total is the outcome score (optional)")
    ap.add_argument("--data", help="JSONL problems {problem, answer} (default: the built-in world)")
    ap.add_argument("--fields", help="map field names: problem=question,answer=solution")
    ap.add_argument("--skip-bad", action="store_true", help="skip malformed lines (counted) instead of stopping")
    ap.add_argument("--problems", type=int, help="how many problems (default: 200 from the world; all of --data)")
    ap.add_argument("--samples", type=int, help="samples per problem (default 16; 4 with --quick)")
    ap.add_argument("--n-list", help="N values, comma-separated (default: 1,2,4,8,16 up to --samples)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    ap.add_argument("--alpha", type=float, help="weight of the trajectory score in the total (default: the PRM's)")
    ap.add_argument("--alpha-sweep", help="also report the total for each of these α, e.g. 0,0.1,0.25,0.5,1 "
                                          "(rows 'rf α=...'; choose α on problems you do not report)")
    ap.add_argument("--out", help="JSONL of every sample with its scores (default: runs/bon-<time>/samples.jsonl)")
    ap.add_argument("--json", help="write the result table here")
    ap.add_argument("--plot", help="PNG plot (default: beside --json, else none)")
    ap.add_argument("--batch-size", type=int, default=256, help="rows per sampling batch")
    ap.add_argument("--score-batch-size", type=int, default=64, help="traces per PRM forward pass")
    ap.add_argument("--draws", type=int, default=2000, help="random subsets per problem when majority "
                                                             "vote cannot enumerate them all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="8 problems, 4 samples (for the tests)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    check_args(args)
    return args


def check_args(args) -> None:
    """Every flag checked, and the outputs writable, before anything slow starts."""
    if args.samples is None:
        args.samples = 4 if args.quick else 16
    if args.problems is None and (args.quick or not args.data):
        args.problems = 8 if args.quick else 200
    for name in ("samples", "problems", "max_new_tokens", "batch_size", "score_batch_size", "draws"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RfprmError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.n_list is None:
        args.n_list = [N for N in DEFAULT_N if N <= args.samples]
    else:
        try:
            args.n_list = sorted({int(s) for s in args.n_list.split(",") if s.strip()})
        except ValueError:
            raise RfprmError(f"--n-list must be comma-separated integers, e.g. 1,2,4,8,16; got {args.n_list!r}") from None
        if not args.n_list:
            raise RfprmError("--n-list is empty; expected e.g. 1,2,4,8,16")
    if args.n_list[0] < 1:
        raise RfprmError(f"--n-list: N must be >= 1, got {args.n_list[0]}")
    if args.n_list[-1] > args.samples:
        raise RfprmError(f"--n-list: N={args.n_list[-1]} is more than --samples {args.samples} "
                         f"(each N is estimated from the same samples)")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise RfprmError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise RfprmError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.alpha is not None and not math.isfinite(args.alpha):
        raise RfprmError(f"--alpha must be a finite number, got {args.alpha}")
    args.alpha_sweep = parse_alphas(args.alpha_sweep) if args.alpha_sweep else []
    if args.seed < 0:
        raise RfprmError(f"--seed must be >= 0, got {args.seed}")
    if args.out is None:
        args.out = str(Path("runs") / f"bon-{time.strftime('%Y%m%d-%H%M%S')}" / "samples.jsonl")
    if args.plot is None and args.json:
        args.plot = str(Path(args.json).with_suffix(".png"))
    outs = [p for p in (args.out, args.json, args.plot) if p]
    if len(set(map(str, map(Path, outs)))) < len(outs):
        raise RfprmError(f"--out, --json and --plot must be different files, got {', '.join(outs)}")
    for path in outs:
        if Path(path).is_dir():
            raise RfprmError(f"cannot write {path}: it is a directory, expected a file name")
        check_writable(path)


def load_problems(args) -> list[dict]:
    """[{problem, answer}]: the reserved evaluation problems of the world, or --data."""
    if not args.data:
        return [{"problem": p.text, "answer": str(p.answer)} for p in eval_problems(args.problems)]
    records = read_records(args.data, "problem", args.fields, args.skip_bad)
    if records.n_skipped:
        print(f"skipped {records.n_skipped} bad lines of {args.data} (first: {records.skipped[0]})")
    for i, rec in enumerate(records, start=1):
        if not rec["answer"].strip():
            raise RfprmError(f"{args.data}: problem {i} has an empty 'answer'; Best-of-N needs a gold answer")
    return list(records[:args.problems] if args.problems else records)


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    problems = load_problems(args)
    policy_dir, prm_dir = resolve_path(args.model), resolve_path(args.prm)
    orm = load_prm(resolve_path(args.orm), device=args.device) if args.orm else None
    prm = load_prm(prm_dir, device=args.device)
    alpha = prm.alpha if args.alpha is None else args.alpha
    model, tok = load_model(policy_dir, device=args.device), load_tokenizer(policy_dir)
    print(f"{len(problems)} problems x {args.samples} samples from {args.model}; PRM {args.prm}: {prm.describe()}")

    texts = chat_complete(model, tok, [world.problem_prompt(p["problem"]) for p in problems],
                          max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          num_samples=args.samples, seed=args.seed, batch_size=args.batch_size, progress=True)
    del model
    n = args.samples
    cands = [make_candidates(p["answer"], texts[i * n:(i + 1) * n]) for i, p in enumerate(problems)]
    score_candidates(prm, [p["problem"] for p in problems], cands, orm, args.score_batch_size, progress=True)

    methods = default_methods(alpha, step_scores=prm.head == "step", orm=orm is not None)
    if prm.head == "step":
        methods[-1:-1] = [Method(f"rf α={a:g}", lambda c, a=a: reasonflux_score(c, a)) for a in args.alpha_sweep]
    elif args.alpha_sweep:
        print("note: --alpha-sweep ignored: this PRM has no step scores (its total is the trajectory score)")
    curve = bon_curve(cands, methods, args.n_list, seed=args.seed, draws=args.draws,
                      n_boot=200 if args.quick else 1000, progress=True)
    flat = [c for cs in cands for c in cs]
    parsed = sum(c.trace is not None for c in flat) / len(flat)
    scored = sum(c.step_scores is not None for c in flat) / len(flat)
    print(f"\n{format_table(curve)}\n(± : bootstrap standard error over {len(problems)} problems; "
          f"random at any N = single-sample accuracy)")
    print(f"parsed traces {100 * parsed:.1f}%, scored by the PRM {100 * scored:.1f}%, alpha {alpha:g}")

    write_records(args.out, [
        {"problem": p["problem"], "answer": p["answer"], "sample": j, "completion": c.text,
         "extracted": c.answer, "correct": c.correct, "parsed": c.trace is not None,
         "step_scores": c.step_scores, "trajectory_score": c.trajectory_score,
         "reasonflux": None if c.step_scores is None else reasonflux_score(c, alpha),
         **({"orm_score": c.orm_score} if orm is not None else {})}
        for p, cs in zip(problems, cands) for j, c in enumerate(cs)])
    result = {**curve.to_json(), "problems": len(problems), "samples": n, "n_list": args.n_list,
              "parse_rate": parsed, "scored_rate": scored, "alpha": alpha, "args": vars(args),
              "seconds": time.time() - t0}
    if args.json:
        with atomic_file(args.json) as f:
            json.dump(result, f, indent=2)
    plotted = False
    if args.plot:
        title = f"Best-of-N, {len(problems)} problems, {Path(str(args.model)).name} + {Path(str(args.prm)).name}"
        plotted = plot_curve(curve, args.plot, title)
        if not plotted:
            print(f"note: matplotlib is not installed; skipped the plot {args.plot}")
    print(f"samples written to {args.out}" + (f", table to {args.json}" if args.json else "")
          + (f", plot to {args.plot}" if plotted else "")
          + f"; {time.time() - t0:.0f} s in all")


if __name__ == "__main__":
    cli_main(main)
