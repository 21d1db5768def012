"""How well does a trained PRM verify? Step errors and wrong plans on held-out teacher traces.

    python -m experiments.prm_quality [--prm tiny-prm] [--prm NAME=DIR ...] [--seed 0] [--quick]

For each PRM, on the world's held-out teacher traces of `train_prm.py --seed S` (the same
validation and test splits: `rfprm.world.task.trace_splits` with the recipe's sizes):

- first-error F1 and step AUC (ProcessBench style, `rfprm.evaluate`), threshold chosen on the
  validation traces, as train_prm.py reports them;
- plan AUC: clean traces against the wrong-plan teacher's traces (every step locally sound,
  the problem's structure misread, so only a trajectory-level view can tell), scored by the
  PRM's step mean, its trajectory score, and the ReasonFlux total mean + α · trajectory at the
  PRM's own α and at the paper's α = 1 (arXiv 2506.18896: the trajectory-level reward is what
  should separate these);
- the total per teacher (mean over its test traces).
"""
import argparse
import statistics

from rfprm import world
from rfprm.errors import RfprmError, cli_main, resolve_path
from rfprm.evaluate import auc, choose_threshold, evaluate_scores
from rfprm.prm import load_prm
from rfprm.world.task import trace_splits


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prm", action="append", default=[], metavar="[NAME=]DIR",
                    help="a PRM to measure (repeat for several; default tiny-prm)")
    ap.add_argument("--seed", type=int, default=0, help="the splits of train_prm.py --seed S (default 0)")
    ap.add_argument("--n-train", type=int, default=20000, help="the recipe's n_train, so the splits match (default 20000)")
    ap.add_argument("--n-val", type=int, default=200, help="validation traces (default 200)")
    ap.add_argument("--n-test", type=int, default=400, help="test traces (default 400)")
    ap.add_argument("--quick", action="store_true", help="the quick recipe's splits (48/24/24): seconds, for the tests")
    args = ap.parse_args()
    prms = parse_prms(args.prm or ["tiny-prm"])
    sizes = (48, 24, 24) if args.quick else (args.n_train, args.n_val, args.n_test)
    if min(sizes) < 1:
        raise RfprmError(f"--n-train, --n-val and --n-test must be >= 1, got {sizes}")
    (_, val, test), _ = trace_splits(sizes, args.seed)
    rows = {name: measure(load_prm(resolve_path(path)), val, test) for name, path in prms.items()}
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


if __name__ == "__main__":
    cli_main(main)
