"""Best-of-N with a process reward model: sample N answers per problem, pick one, check it.

With no arguments it runs on the built-in world (CPU, about a minute): 200 reserved evaluation
problems, 16 samples each from `tiny-policy` at temperature 1, scored by `tiny-prm`. For N in
1, 2, 4, 8, 16 it reports the accuracy of a random pick, majority vote, PRM step aggregations
(min, last, mean), the ReasonFlux total (mean step + α · trajectory, α from the PRM's
checkpoint unless --alpha: 0.1 for tiny-prm, chosen on validation problems), the policy's own
mean token log-prob of each sample (`policy_logprob`, no training), an outcome RM when --orm
is given, other reward models as extra rows (--baseline-prm NAME=DIR, e.g. a response-only
PRM), and the oracle pass@N. Every row picks among the very same samples. Every N is estimated from the same samples by
averaging over subsets; the ± is a bootstrap standard error over problems (rfprm/bon.py).

    python bon.py                                        # the built-in world
    python bon.py --json runs/bon.json                   # + the table as JSON and a PNG plot
    python bon.py --data val.jsonl --alpha-sweep 0,0.1,0.25,0.5,1   # choose α on other problems
    python bon.py --baseline-prm response-only=runs/prm-resp --baseline-prm outcome=runs/prm-orm
    python bon.py --model DIR --prm DIR --data problems.jsonl --device cuda --max-new-tokens 4096

--data takes {"problem", "answer"} JSONL (--fields maps other names). --out (default
runs/bon-<time>/samples.jsonl) keeps every sample with its answer and scores.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rfprm import cli
from rfprm.bon import (Method, bon_curve, default_methods, format_table, make_candidates, parse_baselines,
                       parse_n_list, plot_curve, reasonflux_score, sample_with_logprobs, score_baseline,
                       score_candidates)
from rfprm.checkpoint import load_model
from rfprm.data import read_records, write_records
from rfprm.errors import RfprmError, atomic_file, cli_main, parse_alphas, resolve_path
from rfprm.prm import load_prm
from rfprm.task import TEXT_TASK
from rfprm.tokenizer import load_tokenizer
from rfprm.world.task import MAX_NEW_TOKENS, TASK as WORLD, eval_records

@dataclass
class BonPreset:
    top_p: float = 1.0              # nucleus sampling of the answers (1 = off)
    batch_size: int = 256           # rows per sampling batch
    score_batch_size: int = 64      # traces per PRM forward pass
    draws: int = 2000               # random subsets per problem when majority vote cannot enumerate them all
    n_boot: int = 1000              # bootstrap resamples of the problem set for the ± (200 with --quick)


PRESETS = {"default": BonPreset()}


def parse_args(argv=None):
    ap = cli.make_parser(__doc__, "bon.py")
    cli.add_common(ap, "model", "prm", "data", "fields", "skip_bad", "out", "json", "seed", "device",
                   "quick", "threads", out="every sample with its scores, JSONL (default: runs/bon-<time>/samples.jsonl)",
                   model="the policy that samples the answers (default tiny-policy)",
                   prm="the PRM that scores them (default tiny-prm)")
    ap.set_defaults(model="tiny-policy", prm="tiny-prm")
    ap.add_argument("--orm", metavar="DIR", help="an outcome RM (any PRM checkpoint; its total is the score)")
    ap.add_argument("--baseline-prm", action="append", default=[], metavar="NAME=DIR",
                    help="another reward model as an extra row NAME (mean of its step scores; its total for a "
                         "scalar head), on the same samples; repeat for several")
    ap.add_argument("--problems", type=int, metavar="N", help="how many problems (default: 200 of the world; all of --data)")
    ap.add_argument("--samples", type=int, metavar="N", help="samples per problem (default 16; 4 with --quick)")
    ap.add_argument("--n-list", metavar="LIST", help="N values, comma-separated (default: 1,2,4,8,16 up to --samples)")
    ap.add_argument("--temperature", type=float, default=1.0, metavar="T", help="sampling temperature (default 1)")
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, metavar="N",
                    help=f"answer length limit (default {MAX_NEW_TOKENS})")
    ap.add_argument("--alpha", type=float, metavar="A", help="weight of the trajectory score in the total (default: the PRM's)")
    ap.add_argument("--alpha-sweep", metavar="LIST", help="also report the total for each α, e.g. 0,0.1,0.5,1 (choose α on "
                                          "problems you do not report)")
    ap.add_argument("--plot", metavar="PNG", help="the plot (default: beside --json, else none)")
    cli.add_preset_flags(ap, PRESETS, "default")
    args = ap.parse_args(argv)
    args.settings, _ = cli.apply_sets(PRESETS[args.preset], args.set)
    check_args(args)
    return args


def check_args(args) -> None:
    """Every flag checked, and the outputs writable, before anything slow starts."""
    cli.check_common(args)
    s = args.settings
    if args.samples is None:
        args.samples = 4 if args.quick else 16
    if args.problems is None and (args.quick or not args.data):
        args.problems = 8 if args.quick else 200
    if args.quick:
        s.n_boot = 200
    for name, value in [("--samples", args.samples), ("--problems", args.problems),
                        ("--max-new-tokens", args.max_new_tokens), ("batch_size", s.batch_size),
                        ("score_batch_size", s.score_batch_size), ("draws", s.draws), ("n_boot", s.n_boot)]:
        cli.at_least(value, 1, name)
    args.n_list = parse_n_list(args.n_list, args.samples)
    if not args.temperature >= 0:
        raise RfprmError(f"--temperature must be >= 0, got {args.temperature}")
    cli.finite(args.temperature, "--temperature")
    if not 0 < s.top_p <= 1:
        raise RfprmError(f"top_p must be in (0, 1], got {s.top_p}")
    cli.finite(args.alpha, "--alpha")
    args.alpha_sweep = parse_alphas(args.alpha_sweep) if args.alpha_sweep else []
    if args.out is None:
        args.out = str(Path(cli.run_name("bon")) / "samples.jsonl")
    if args.plot is None and args.json:
        args.plot = str(Path(args.json).with_suffix(".png"))
    outs = [p for p in (args.out, args.json, args.plot) if p]
    if len(set(map(str, map(Path, outs)))) < len(outs):
        raise RfprmError(f"--out, --json and --plot must be different files, got {', '.join(outs)}")
    for path in outs:
        cli.check_output(path, "output")
    args.baselines = parse_baselines(args.baseline_prm)


def load_problems(args) -> list[dict]:
    """[{problem, answer}]: the reserved evaluation problems of the world, or --data."""
    if not args.data:
        return eval_records(args.problems)
    records = read_records(args.data, "problem", args.fields, args.skip_bad)
    if records.n_skipped:
        print(f"skipped {records.n_skipped} bad lines of {args.data} (first: {records.skipped[0]})")
    for i, rec in enumerate(records, start=1):
        if not rec["answer"].strip():
            raise RfprmError(f"{args.data}: problem {i} has an empty 'answer'; Best-of-N needs a gold answer")
    return list(records[:args.problems] if args.problems else records)


def main(argv=None):
    args = parse_args(argv)
    if args.show_preset:
        print(cli.show_preset(args.preset, args.settings))
        return
    s, task, t0 = args.settings, TEXT_TASK if args.data else WORLD, time.time()
    problems = load_problems(args)
    policy_dir, prm_dir = resolve_path(args.model), resolve_path(args.prm)
    orm = load_prm(resolve_path(args.orm), device=args.device) if args.orm else None
    baselines = {name: load_prm(resolve_path(d), device=args.device) for name, d in args.baselines.items()}
    prm = load_prm(prm_dir, device=args.device)
    alpha = prm.alpha if args.alpha is None else args.alpha
    model, tok = load_model(policy_dir, device=args.device), load_tokenizer(policy_dir)
    print(f"{len(problems)} problems x {args.samples} samples from {args.model}; PRM {args.prm}: {prm.describe()}")

    # ---- sample, score, pick ----
    n = args.samples
    texts, logprobs = sample_with_logprobs(model, tok, [task.prompt(p["problem"]) for p in problems],
                                           max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                           top_p=s.top_p, num_samples=n, seed=args.seed, batch_size=s.batch_size,
                                           progress=True)
    del model
    cands = [make_candidates(p["answer"], texts[i * n:(i + 1) * n]) for i, p in enumerate(problems)]
    for c, lp in zip((c for cs in cands for c in cs), logprobs):
        c.policy_logprob = lp
    problem_texts = [p["problem"] for p in problems]
    score_candidates(prm, problem_texts, cands, orm, s.score_batch_size, progress=True)
    for name, other in baselines.items():
        score_baseline(name, other, problem_texts, cands, s.score_batch_size, progress=True)
    methods = default_methods(alpha, step_scores=prm.head == "step", orm=orm is not None, logprob=True,
                              baselines=tuple(baselines))
    if prm.head == "step":
        methods[-1:-1] = [Method(f"rf α={a:g}", lambda c, a=a: reasonflux_score(c, a)) for a in args.alpha_sweep]
    elif args.alpha_sweep:
        print("note: --alpha-sweep ignored: this PRM has no step scores (its total is the trajectory score)")
    pairs = [("reasonflux", b) for b in ("majority", "policy_logprob", *baselines, "random")]
    curve = bon_curve(cands, methods, args.n_list, seed=args.seed, draws=s.draws, n_boot=s.n_boot,
                      pairs=tuple(pairs), progress=True)

    # ---- report ----
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
         "policy_logprob": c.policy_logprob, **({"baselines": c.baseline_scores} if baselines else {}),
         **({"orm_score": c.orm_score} if orm is not None else {})}
        for p, cs in zip(problems, cands) for j, c in enumerate(cs)])
    if args.json:
        result = {**curve.to_json(), "problems": len(problems), "samples": n, "n_list": args.n_list,
                  "parse_rate": parsed, "scored_rate": scored, "alpha": alpha,
                  "args": {**vars(args), "settings": vars(s)}, "seconds": time.time() - t0}
        with atomic_file(args.json) as f:
            json.dump(result, f, indent=2)
    plotted = False
    if args.plot:
        title = f"Best-of-N, {len(problems)} problems, {Path(str(args.model)).name} + {Path(str(args.prm)).name}"
        plotted = plot_curve(curve, args.plot, title)
        if not plotted:
            print(f"note: matplotlib is not installed; skipped the plot {args.plot}")
    print(f"samples written to {args.out}" + (f", table to {args.json}" if args.json else "")
          + (f", plot to {args.plot}" if plotted else "") + f"; {time.time() - t0:.0f} s in all")


if __name__ == "__main__":
    cli_main(main)
