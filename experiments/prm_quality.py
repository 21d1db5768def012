"""How well does a trained PRM verify? Step errors and wrong plans on held-out teacher traces.

    python -m experiments.prm_quality [--prm tiny-prm] [--prm NAME=DIR ...] [--seed 0] [--quick]
    python -m experiments.prm_quality --policy-problems 200      # + the policy's own samples

For each PRM, on the world's held-out teacher traces of `train_prm.py --seed S` (the same
validation and test splits: `rfprm.world.task.trace_splits` with the recipe's sizes):

- first-error F1 and step AUC (ProcessBench style, `rfprm.evaluate`), threshold chosen on the
  validation traces, as train_prm.py reports them;
- plan AUC: clean traces against the wrong-plan teacher's traces (every step locally sound,
  the problem's structure misread, so only a trajectory-level view can tell), scored by the
  PRM's step mean, its trajectory score, and the ReasonFlux total mean + α · trajectory at the
  PRM's own α and at the paper's α = 1 (arXiv 2506.18896: the trajectory-level reward is what
  should separate these);
- the total per teacher (mean over its test traces);
- with `--policy-problems N`: how well the PRM checks the policy's own slips, which teacher
  traces need not contain. The samples are bon.py's (the first N reserved evaluation problems,
  `--samples` each from `--policy` at temperature 1, the same seed and batches); the world's
  exact judge reads each parsed sample's thinking steps, for evaluation only: its first step
  below USEFUL (a wrong result, a step that performs none of the problem's operations, or no
  equation) is the sample's first flaw. Policy step AUC = sound steps before a first flaw (all
  steps of a flawless sample) against the first flaws, all of them and by kind (wrong results,
  the other kinds); steps after a first flaw are left out, as ProcessBench leaves them out.
"""
import argparse
import statistics

from rfprm import world
from rfprm.checkpoint import load_model
from rfprm.errors import RfprmError, cli_main, resolve_path
from rfprm.evaluate import auc, choose_threshold, evaluate_scores
from rfprm.generate import chat_complete
from rfprm.prm import load_prm
from rfprm.steps import split_completion, split_steps
from rfprm.tokenizer import load_tokenizer
from rfprm.world.judge import USEFUL, WRONG, judge_steps
from rfprm.world.task import MAX_NEW_TOKENS, TASK, eval_records, trace_splits


def parse_prms(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, eq, path = item.partition("=")
        name, path = (name.strip(), path.strip()) if eq else (item.strip(), item.strip())
        if not name or not path or name in out:
            raise RfprmError(f"--prm {item!r}: expected DIR, a shipped name, or NAME=DIR with a new NAME")
        out[name] = path
    return out


def plan_auc(scores: list[float], records: list[dict]) -> float:
    """AUC (percent) of clean traces' scores over wrong-plan traces' scores."""
    clean = [s for s, r in zip(scores, records) if r["teacher"] == "clean"]
    wrong = [s for s, r in zip(scores, records) if r["teacher"] == "wrong_plan"]
    return 100.0 * auc(clean, wrong)


def measure(prm, val: list[dict], test: list[dict], batch_size: int = 32) -> dict:
    val_scores = prm.score_batch(val, batch_size=batch_size)
    threshold = choose_threshold([s.steps for s in val_scores], [r["first_error"] for r in val])
    scores = prm.score_batch(test, batch_size=batch_size)
    res = evaluate_scores([s.steps for s in scores], [r["first_error"] for r in test], threshold)
    mean = [statistics.fmean(s.steps) if s.steps else float(s.trajectory) for s in scores]
    traj = [float(s.trajectory) for s in scores]
    res.update(plan_step=plan_auc(mean, test), plan_traj=plan_auc(traj, test),
               plan_total=plan_auc([m + prm.alpha * t for m, t in zip(mean, traj)], test),
               plan_total1=plan_auc([m + t for m, t in zip(mean, traj)], test), alpha=prm.alpha)
    res["by_teacher"] = {k: statistics.fmean(m + prm.alpha * t for m, t, r in zip(mean, traj, test)
                                             if r["teacher"] == k)
                         for k in world.TEACHERS if any(r["teacher"] == k for r in test)}
    return res


def policy_samples(policy: str, n_problems: int, samples: int, seed: int = 0) -> list[dict]:
    """bon.py's samples of the first n reserved problems (temperature 1, its seed and batches of
    256 rows), those that parse as traces, each with `first_error`: the index of its first
    thinking step the exact judge scores below USEFUL, or -1."""
    policy_dir = resolve_path(policy)
    model, tok = load_model(policy_dir), load_tokenizer(policy_dir)
    problems = eval_records(n_problems)
    texts = chat_complete(model, tok, [TASK.prompt(p["problem"]) for p in problems], max_new_tokens=MAX_NEW_TOKENS,
                          temperature=1.0, num_samples=samples, seed=seed, batch_size=256, progress=True)
    return judged_samples([p["problem"] for p in problems for _ in range(samples)], texts)


def judged_samples(problems: list[str], texts: list[str]) -> list[dict]:
    """Each completion (of the problem beside it) that parses as a trace, with its first flaw by
    the exact judge: the first thinking step below USEFUL, or -1, and the flaw's kind: "wrong" (a
    wrong result) or "other" (right arithmetic that performs none of the problem's operations, or
    no equation)."""
    out = []
    for problem, text in zip(problems, texts, strict=True):
        trace = split_completion(text)
        if trace is None:
            continue
        verdicts = judge_steps(problem, split_steps(trace[0]))
        flawed = [t for t, v in enumerate(verdicts) if v < USEFUL]
        out.append({"problem": problem, "trajectory": trace[0], "response": trace[1],
                    "first_error": flawed[0] if flawed else -1,
                    "flaw": ("wrong" if verdicts[flawed[0]] == WRONG else "other") if flawed else None})
    return out


def policy_step_auc(prm, records: list[dict], batch_size: int = 32) -> dict[str, tuple[float, int, int]]:
    """{"all" | "wrong" | "other": (AUC in percent of sound steps over those first flaws, n sound,
    n flaws)}; a record without a "flaw" kind counts in "all" only."""
    sound, flaws = [], {"all": [], "wrong": [], "other": []}
    for s, r in zip(prm.score_batch(records, batch_size=batch_size), records):
        k = r["first_error"]
        sound += list(s.steps if k < 0 else s.steps[:k])
        if k >= 0:
            flaws["all"].append(s.steps[k])
            if r.get("flaw") in flaws:
                flaws[r["flaw"]].append(s.steps[k])
    return {kind: ((100.0 * auc(sound, f) if sound and f else float("nan")), len(sound), len(f))
            for kind, f in flaws.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prm", action="append", default=[], metavar="[NAME=]DIR",
                    help="a PRM to measure (repeat for several; default tiny-prm)")
    ap.add_argument("--seed", type=int, default=0, help="the splits of train_prm.py --seed S (default 0)")
    ap.add_argument("--n-train", type=int, default=20000, help="the recipe's n_train, so the splits match (default 20000)")
    ap.add_argument("--n-val", type=int, default=200, help="validation traces (default 200)")
    ap.add_argument("--n-test", type=int, default=400, help="test traces (default 400)")
    ap.add_argument("--policy-problems", type=int, default=0, metavar="N",
                    help="also score the policy's samples on the first N reserved problems, bon.py's (0: off)")
    ap.add_argument("--samples", type=int, default=16, help="samples per problem with --policy-problems (default 16)")
    ap.add_argument("--policy", default="tiny-policy", help="the policy that samples (default tiny-policy)")
    ap.add_argument("--quick", action="store_true",
                    help="the quick recipe's splits (48/24/24) and the policy's samples on 4 problems x 4: "
                         "seconds, for the tests")
    args = ap.parse_args()
    if args.policy_problems < 0 or args.samples < 1:
        raise RfprmError(f"--policy-problems must be >= 0 and --samples >= 1, got {args.policy_problems}, "
                         f"{args.samples}")
    if args.quick:
        args.policy_problems, args.samples = 4, 4     # the policy part is exercised too
    prms = parse_prms(args.prm or ["tiny-prm"])
    sizes = (48, 24, 24) if args.quick else (args.n_train, args.n_val, args.n_test)
    if min(sizes) < 1:
        raise RfprmError(f"--n-train, --n-val and --n-test must be >= 1, got {sizes}")
    (_, val, test), _ = trace_splits(sizes, args.seed)
    loaded = {name: load_prm(resolve_path(path)) for name, path in prms.items()}
    rows = {name: measure(prm, val, test) for name, prm in loaded.items()}
    n_plan = sum(r["teacher"] == "wrong_plan" for r in test)
    print(f"{len(test)} test traces ({n_plan} wrong-plan), {len(val)} validation, splits of seed {args.seed}")
    print(f"{'':<38}plan AUC by")
    print(f"{'PRM':<24} {'F1':>5} {'stepAUC':>7} {'step mean':>9} {'traj':>6} {'total':>6} {'total α=1':>9}")
    for name, r in rows.items():
        print(f"{name:<24} {r['f1']:5.1f} {r['auc']:7.1f} {r['plan_step']:9.1f} {r['plan_traj']:6.1f} "
              f"{r['plan_total']:6.1f} {r['plan_total1']:9.1f}   (α {r['alpha']:g})")
    print("mean total (step mean + α · trajectory) by teacher")
    for name, r in rows.items():
        print(f"{name:<24} " + "  ".join(f"{k} {v:.3f}" for k, v in r["by_teacher"].items()))
    if args.policy_problems:
        own = policy_samples(args.policy, args.policy_problems, args.samples)
        flawed = sum(r["first_error"] >= 0 for r in own)
        print(f"the policy's own samples: {args.policy_problems} reserved problems x {args.samples} from "
              f"{args.policy}, {len(own)} parsed, {flawed} with a flawed thinking step (the exact judge, "
              f"evaluation only)")
        print("policy step AUC: sound steps against first flaws, all of them / wrong results / the other kinds")
        for name, prm in loaded.items():
            res = policy_step_auc(prm, own)
            shown = [f"{a:.1f}" if n_sound and n else "n/a" for a, n_sound, n in res.values()]
            counts = ", ".join(f"{n} {kind}" for kind, (_, _, n) in res.items())
            print(f"{name:<24} {' / '.join(shown)}  ({res['all'][1]} sound steps; first flaws: {counts})")


if __name__ == "__main__":
    cli_main(main)
