"""Each default script's time and where it goes, against its budget on a 2-core laptop.

    python bench/bench_scripts.py                        # all four defaults, one after another (~1 h)
    python bench/bench_scripts.py --scripts bon,rl       # some of them
    python bench/bench_scripts.py --quick                # every script's --quick (a few minutes)

Each script runs in this process under cProfile, as `python SCRIPT ARGS` would (its own `main`),
writing into a temporary directory. The table gives the wall time, the budget of the default (the
recipes issue's targets) and the cumulative time inside the functions that do the work. The phases
nest (labelling samples rollouts; training evaluates every few hundred steps), so a column is
"time inside", not a share that adds up to the total.
"""
from __future__ import annotations

import argparse
import cProfile
import contextlib
import importlib.util
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_S = {"bon": 120, "train_prm": 360, "select_data": 600, "rl": 600}   # the defaults, 2 cores
SCRIPTS = {"bon": "bon.py", "train_prm": "train_prm.py", "select_data": "select_data.py", "rl": "rl.py"}
# phase -> (file, function) pairs whose cumulative time is that phase's
PHASES = {
    "sampling": [("rfprm/generate.py", "generate")],
    "labelling": [("rfprm/labels.py", "label_records")],
    "training": [("rfprm/trainer.py", "train")],
    "PRM scoring": [("rfprm/prm.py", "score_batch")],
    "RL update": [("rfprm/rl_loop.py", "update")],
    "evaluation": [("rfprm/prm_train.py", "evaluate_prm"), ("rfprm/rl_loop.py", "evaluate"),
                   ("rfprm/selection.py", "student_accuracy")],
}


def script_args(name: str, out: Path, quick: bool) -> list[str]:
    args = {"bon": ["--out", str(out / "samples.jsonl")],
            "train_prm": ["--out", str(out / "prm"), "--work", str(out / "work")],
            "select_data": ["--sft", "--out", str(out / "top.jsonl")],
            "rl": ["--out", str(out / "rl")]}[name]
    return args + (["--quick"] if quick else [])


def run_script(name: str, argv: list[str]) -> tuple[float, pstats.Stats]:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / SCRIPTS[name])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                 # dataclasses look their module up there
    spec.loader.exec_module(module)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        prof.runcall(module.main, argv)
    return time.perf_counter() - t0, pstats.Stats(prof)


def phase_times(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds inside each phase's functions (the outermost call counted once)."""
    out = {}
    for phase, targets in PHASES.items():
        total = 0.0
        for (file, line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
            if any(file.endswith(f) and func == name for f, name in targets):
                total += ct
        out[phase] = total
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scripts", default=",".join(SCRIPTS), help="comma-separated: " + ", ".join(SCRIPTS))
    ap.add_argument("--quick", action="store_true", help="each script's --quick")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, the budgets' machine)")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.scripts.split(",") if s.strip()]
    bad = [n for n in names if n not in SCRIPTS]
    if bad or not names:
        ap.error(f"--scripts: expected some of {', '.join(SCRIPTS)}; got {args.scripts!r}")
    torch.set_num_threads(args.threads)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            argv_s = script_args(name, Path(tmp), args.quick)
            print(f"running python {SCRIPTS[name]} {' '.join(argv_s)} ...", file=sys.stderr, flush=True)
            wall, stats = run_script(name, argv_s)
        rows.append((name, wall, phase_times(stats)))
    print(f"\n{'script':<12}{'wall s':>8}{'budget':>8}  " + "".join(f"{p:>13}" for p in PHASES))
    for name, wall, phases in rows:
        budget = "" if args.quick else f"{BUDGET_S[name]:>8}"
        print(f"{name:<12}{wall:>8.0f}{budget:>8}  " + "".join(f"{phases[p]:>13.1f}" for p in PHASES))
    print(f"(threads {args.threads}; phases are cumulative seconds inside their functions and nest)")


if __name__ == "__main__":
    main()
