"""Does the trajectory term earn its place? The shipped tiny-prm's joint stage against its
step-only ablation, over seeds.

    python -m rfprm.recipes tiny-prm --out DIR/tiny-prm --keep-work    # leaves DIR/tiny-prm-work-seed0
    python -m experiments.joint_ablation --work DIR/tiny-prm-work-seed0 --seeds 0,1,2

The tiny-prm recipe (rfprm/world/recipes.py) trains a two-stage PRM, then a joint stage
(`JOINT_STAGE`) that trains the backbone on the verdicts and the trajectory reward (λ_final = 2)
of fresh teacher traces. Here that joint stage runs again from the same two-stage PRM, on the
same labelled traces, for each seed, twice: `reasonflux` as the recipe has it, and `step-only`
with λ_final = 0 (the trajectory term removed, every other part the same: traces, steps, lr,
the marker auxiliary). The seed sets the batches. Seed 0's reasonflux PRM is the recipe's own
joint stage (before its α is chosen for Best-of-N).

Each PRM is measured on the recipe's held-out teacher traces (experiments.prm_quality.measure):
first-error F1 and step AUC, and plan AUC, clean traces against the wrong-plan teacher's (every
step locally sound, the problem misread), by the step mean, the trajectory score and the total
mean + α · trajectory at α = 1 (the recipe's stored α, and the paper's for selection).

Like `python -m rfprm.recipes`, it runs with the x86 CPU kernels pinned to AVX2, so seed 0 can
write the build's bytes. `--quick` without --work builds a --quick tiny-prm in a temporary directory first (the tests).
"""
import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from experiments.prm_quality import measure
from rfprm.checkpoint import load_model
from rfprm.data import read_records
from rfprm.errors import RfprmError, atomic_file, cli_main, resolve_path
from rfprm.prm import load_prm
from rfprm.prm_recipe import PRESETS, check_recipe, marker_targets, quick as quick_recipe, train_variants
from rfprm.prm_train import keep_layers
from rfprm.recipes import cpu_pin_env
from rfprm.tokenizer import load_tokenizer
from rfprm.world.recipes import JOINT_STAGE, build_tiny_prm
from rfprm.world.task import TASK, trace_splits

COLUMNS = (("f1", "F1"), ("auc", "step AUC"), ("plan_step", "plan: step mean"), ("plan_traj", "plan: traj"),
           ("plan_total1", "plan: total"))


def run_seed(work: Path, out: Path, seed: int, build_seed: int, policy: str, quick: bool) -> dict:
    """The joint stage from work/two-stage with and without its trajectory term -> {variant: measure}."""
    base = quick_recipe(PRESETS["tiny-prm"]) if quick else PRESETS["tiny-prm"]
    rj = check_recipe(quick_recipe(replace(base, **JOINT_STAGE)) if quick else replace(base, **JOINT_STAGE))
    (_, val, test), _ = trace_splits((base.n_train, base.n_val, base.n_test), build_seed)
    policy_dir = resolve_path(policy)
    joint = list(read_records(work / "labels_joint.jsonl", "labelled"))
    joint, marker = marker_targets(joint, rj, TASK.step_result, policy_dir, work / "joint", resume=True)
    lm, tok = load_model(policy_dir), load_tokenizer(policy_dir)
    if rj.prm_layers:
        keep_layers(lm, rj.prm_layers)
    run = out / f"seed{seed}"
    train_variants(lm, tok, joint, rj, ["reasonflux", "step-only"], run, out=run / "reasonflux", val=val,
                   test=test, seed=seed, resume=True, init_prm=work / "two-stage", marker_target=marker,
                   is_correct=TASK.is_correct)
    return {name: measure(load_prm(path), val, test)
            for name, path in (("reasonflux", run / "reasonflux"), ("step-only", run / "baseline_1"))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="the training state of `python -m rfprm.recipes tiny-prm "
                                                  "--keep-work` (its two-stage PRM and joint labels)")
    ap.add_argument("--out", help="where the PRMs go (default: WORK/joint-ablation)")
    ap.add_argument("--seeds", help="joint-stage seeds, comma-separated (default 0,1,2; 0 with --quick)")
    ap.add_argument("--build-seed", type=int, default=0, help="the recipe's --seed: its held-out splits (default 0)")
    ap.add_argument("--policy", default="tiny-policy", help="the recipe's --policy (default tiny-policy)")
    ap.add_argument("--json", help="write the table here")
    ap.add_argument("--quick", action="store_true", help="for a --quick build (the tests)")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.work is None and not args.quick:
        raise RfprmError("--work: the training state of `python -m rfprm.recipes tiny-prm --keep-work` is required")
    if args.work is None:
        with tempfile.TemporaryDirectory() as tmp:
            build_tiny_prm(args.policy, Path(tmp) / "tiny-prm", args.build_seed, quick=True, keep_work=True)
            return main([*argv, "--work", str(Path(tmp) / f"tiny-prm-work-seed{args.build_seed}-quick")])
    args.seeds = args.seeds or ("0" if args.quick else "0,1,2")
    work = Path(args.work)
    for need in ("two-stage/config.json", "labels_joint.jsonl", "joint/marker_results_train.json"):
        if not (work / need).exists():
            raise RfprmError(f"--work {work}: no {need}; build it with `python -m rfprm.recipes tiny-prm --keep-work` "
                             f"(the state of a finished build), or pass that build's work directory")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise RfprmError(f"--seeds: expected distinct integers >= 0, e.g. 0,1,2; got {args.seeds!r}")
    out = Path(args.out) if args.out else work / "joint-ablation"
    rows = {s: run_seed(work, out, s, args.build_seed, args.policy, args.quick) for s in seeds}
    print(f"\n{'seed':<6}{'variant':<12}" + "".join(f"{title:>17}" for _, title in COLUMNS))
    for s, by in rows.items():
        for name, r in by.items():
            print(f"{s:<6}{name:<12}" + "".join(f"{r[k]:>17.1f}" for k, _ in COLUMNS))
    summary = {}
    for name in ("reasonflux", "step-only"):
        vals = {k: [rows[s][name][k] for s in seeds] for k, _ in COLUMNS}
        summary[name] = {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in vals.items()}
        print(f"{'mean':<6}{name:<12}" + "".join(f"{m:>10.1f} ± {sd:<4.1f}" for m, sd in summary[name].values()))
    built = re.fullmatch(r"(.+)-work-seed\d+(-quick)?", work.name)
    built = work.parent / built.group(1) / "model.safetensors" if built else None
    if args.build_seed in seeds and built is not None and built.exists():
        same = built.read_bytes() == (out / f"seed{args.build_seed}" / "reasonflux" / "model.safetensors").read_bytes()
        print(f"seed {args.build_seed}'s reasonflux PRM against the build's {built.parent.name}: "
              f"{'the same bytes' if same else 'DIFFERENT bytes'}")
    gaps = [rows[s]["reasonflux"]["plan_total1"] - rows[s]["step-only"]["plan_total1"] for s in seeds]
    sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    print(f"plan AUC of the total, reasonflux - step-only, paired over {len(seeds)} seeds: "
          f"{statistics.fmean(gaps):+.1f} ± {sd:.1f} (per seed: {', '.join(f'{g:+.1f}' for g in gaps)})")
    if args.json:
        with atomic_file(args.json) as f:
            json.dump({"per_seed": {str(s): {n: {k: r[k] for k, _ in COLUMNS}
                                                                      for n, r in by.items()} for s, by in rows.items()},
                       "summary": summary, "plan_total_gap": gaps}, f, indent=2)


if __name__ == "__main__":
    env = cpu_pin_env(os.environ, platform.machine())   # the recipes' kernels, so seed 0 can match the build
    if env is not None:
        os.execve(sys.executable, [sys.executable, "-m", "experiments.joint_ablation", *sys.argv[1:]], env)
    cli_main(main)
