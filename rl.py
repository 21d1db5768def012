"""Online RL of a policy with a process reward model: GRPO with the ReasonFlux-PRM reward mix, or PPO
with dense step rewards (arXiv 2506.18896, online RL; maths in rfprm/rl.py, loop in rfprm/rl_loop.py).

With no arguments it runs GRPO on the built-in world (CPU, minutes): `tiny-policy` trained on the
world's four-operation problems (`--problems hard`; `all` for the whole mix, where the policy is
already right three times in four) that no evaluation set holds, with the paper's reward mix
(1 - beta) * rule + beta * PRM at beta 0.5, then evaluated before and after on held-out problems of
the same kind (sampled and greedy accuracy, and the share of correct answers reached through a
step the world's judge marks wrong).

    python rl.py                                   # GRPO, rule and PRM rewards mixed (beta 0.5)
    python rl.py --beta 0                          # GRPO, rule reward only
    python rl.py --beta 0.75 --prm-reward last     # the released code's mix
    python rl.py --algo ppo --beta 0.5             # PPO with dense PRM step rewards (min-form credit)
    python rl.py --compare --json runs/rl.json     # grpo-rule vs grpo-mix vs ppo-dense over --seeds
    python rl.py --problems all --train-problems hard   # train on hard problems, evaluate on the mix
    python rl.py --validation --eval-every 6       # choose settings on a split the report never uses
    python rl.py --model DIR --prm DIR --data train.jsonl --eval-data test.jsonl --device cuda
    python rl.py --model DIR --lora 16 --dry-run   # memory estimate of a one-GPU run, then exit

Outputs in --out: the final policy (HF layout; with --lora its PEFT adapter in adapter/, which
`python -m rfprm.lora merge` folds into a checkpoint), curves.csv and curves.png, rl_state/ for
--resume. The default run's settings were chosen on the --validation split (docs/results.md,
"Online RL"); GRPO leaves groups whose answers all got the same reward out of the update.
"""
from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path

from tqdm.auto import tqdm

from rfprm import cli, world
from rfprm.checkpoint import load_config, load_model, save_model
from rfprm.lora import save_adapter
from rfprm.memory import RunSettings, estimate, preflight
from rfprm.data import read_records
from rfprm.errors import RfprmError, atomic_dir, atomic_file, check_writable, cli_main
from rfprm.errors import resolve_path
from rfprm.prm import load_prm
from rfprm.world.task import EVAL_RESERVE, MAX_NEW_TOKENS, eval_problems, held_out_texts
from rfprm.rl import PRM_REWARDS, check_beta
from rfprm.rl_loop import RLConfig, evaluate, read_run_id, run_id_of, train_rl
from rfprm.tokenizer import load_tokenizer

TRAIN_SEED = 4242        # the world problems RL trains on (none of them in the reserved eval set)
VALIDATION_SEED = 4343   # --validation: problems for choosing hyperparameters (in neither of the above)
# The default run, chosen on the validation split (docs/results.md, "Online RL"): the world's
# four-operation problems, where tiny-policy is right a third of the time (on the whole mix it is
# right three times in four at T = 1 and most groups get one rule reward), 12 steps (validation
# accuracy peaked at 12-16 and fell after).
DEFAULTS = dict(steps=12, prompts=16, group_size=8, lr=3e-5, epochs=2, eval_problems=200, problems="hard",
                beta=0.5)   # beta: the mix beat rule-only GRPO on validation (38.6 against 37.2 at step 12)
# --problems: which built-in world problems (by their number of operations, 2 to 4)
PROBLEM_SETS = {"all": (2, 3, 4), "hard": (4,)}
COMPARE = {"grpo-rule": dict(algo="grpo", beta=0.0), "grpo-mix": dict(algo="grpo", beta=None),
           "ppo-dense": dict(algo="ppo", beta=None)}


def parse_args(argv=None):
    ap = cli.make_parser(__doc__, "rl.py")
    cli.add_common(ap, "model", "prm", "data", "out", "json", "seed", "device", "quick", "resume", "threads",
                   "lora", "dry_run",
                   model="policy to train: a checkpoint directory or shipped name (default tiny-policy)",
                   prm="process reward model: a directory or shipped name (default tiny-prm)",
                   data="training problems, JSONL {problem, answer} (default: the built-in world)",
                   out="output directory (default runs/rl-<time>)",
                   lora="train LoRA adapters of rank R on the policy instead of every weight; --out then holds "
                        "the adapter (merge it with python -m rfprm.lora merge) (0: off)",
                   dry_run="print the memory estimate of the run (policy, reference, PRM, KV cache) and exit")
    ap.add_argument("--force", action="store_true", help="run even when the memory estimate exceeds free memory")
    ap.add_argument("--eval-data", help="held-out problems, JSONL {problem, answer} (default: reserved world problems)")
    ap.add_argument("--validation", action="store_true", help="evaluate on a world validation split (neither "
                    "trained on nor reserved for the reported evaluation): for choosing hyperparameters")
    ap.add_argument("--eval-problems", type=int, help=f"how many held-out problems (default {DEFAULTS['eval_problems']}; "
                    "16 with --quick)")
    ap.add_argument("--eval-samples", type=int, default=4, help="samples per held-out problem for sampled accuracy")
    ap.add_argument("--eval-every", type=int, default=0, metavar="K", help="also evaluate every K steps (held-out "
                    "sampled and greedy accuracy go into curves.csv; 0: only before and after)")
    ap.add_argument("--algo", default="grpo", choices=["grpo", "ppo"])
    ap.add_argument("--beta", type=float, default=None, help="PRM share of the reward, in [0, 1] (default "
                    f"{DEFAULTS['beta']}; 0 = rule reward only; --compare's grpo-rule is always 0)")
    ap.add_argument("--prm-reward", default="reasonflux", choices=PRM_REWARDS,
                    help="GRPO's PRM reward: reasonflux total, mean/min of steps, or last (whole answer as one step)")
    ap.add_argument("--value-lr", type=float, default=1e-3, help="PPO: the value head's learning rate")
    ap.add_argument("--ppo-baseline", default="loo", choices=["loo", "none"], help="PPO: centre each reward "
                    "source on the prompt's other samples (PRIME's leave-one-out) or not")
    ap.add_argument("--credit", default="min", choices=["min", "sum"], help="PPO credit for step rewards: PURE's min-form or sums")
    ap.add_argument("--problems", default=DEFAULTS["problems"], choices=list(PROBLEM_SETS),
                    help="built-in world problems to train and evaluate on: hard (four operations, the default) or all")
    ap.add_argument("--train-problems", choices=list(PROBLEM_SETS), help="built-in world problems to train on, "
                    "if not those of --problems (e.g. train on hard ones, evaluate on all)")
    ap.add_argument("--steps", type=int, help=f"RL steps (default {DEFAULTS['steps']}; 2 with --quick)")
    ap.add_argument("--prompts", type=int, help=f"prompts per step (default {DEFAULTS['prompts']}; 4 with --quick)")
    ap.add_argument("--group-size", type=int, default=DEFAULTS["group_size"], help="samples per prompt (G)")
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="AdamW learning rate")
    ap.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="inner passes over each step's samples")
    ap.add_argument("--clip-eps", type=float, default=0.2)
    ap.add_argument("--clip-eps-high", type=float, help="upper clip (default = --clip-eps)")
    ap.add_argument("--kl", type=float, default=0.0, help="k3 KL coefficient to the starting policy (0: no reference kept)")
    ap.add_argument("--no-std", action="store_true", help="GRPO advantages without dividing by the group std")
    ap.add_argument("--keep-flat", action="store_true", help="keep zero-spread groups in GRPO's update (default: "
                    "dropped, DAPO's dynamic sampling; with --kl > 0 they are always kept)")
    ap.add_argument("--loss-agg", default="token", choices=["token", "sequence"])
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, in training and in the "
                    "sampled evaluation")
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    ap.add_argument("--compare", action="store_true", help="grpo-rule, grpo-mix and ppo-dense over --seeds")
    ap.add_argument("--seeds", type=int, default=3, help="seeds for --compare")
    ap.add_argument("--methods", default=",".join(COMPARE), help=f"which of {', '.join(COMPARE)} --compare runs "
                    "(comma-separated)")
    args = ap.parse_args(argv)
    cli.check_common(args)
    args.model = args.model or "tiny-policy"
    args.prm = args.prm or "tiny-prm"
    args.steps = args.steps or (2 if args.quick else DEFAULTS["steps"])
    args.prompts = args.prompts or (4 if args.quick else DEFAULTS["prompts"])
    args.eval_problems = args.eval_problems or (16 if args.quick else DEFAULTS["eval_problems"])
    cli.at_least(args.lora, 0, "--lora", " (0 = off)")
    cli.at_least(args.eval_samples, 1, "--eval-samples")
    cli.at_least(args.eval_every, 0, "--eval-every", " (0 = off)")
    cli.at_least(args.seeds, 1, "--seeds")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or any(m not in COMPARE for m in args.methods):
        raise RfprmError(f"--methods {','.join(args.methods) or '(none)'}: expected some of {', '.join(COMPARE)}")
    if args.beta is not None:
        check_beta(args.beta)
    if args.validation and args.eval_data:
        raise RfprmError("--validation evaluates on the world's validation split; it cannot be combined with --eval-data")
    if args.resume and not args.out:
        raise RfprmError("--resume needs --out, the directory of the run to continue")
    if args.resume and args.compare:
        raise RfprmError("--resume continues one run; it cannot be combined with --compare")
    args.out = Path(args.out or cli.run_name("rl"))
    if args.out.exists() and not args.out.is_dir():
        raise RfprmError(f"--out {args.out} is a file; expected a directory")
    if not args.dry_run:
        check_writable(args.out / "x")
        if args.json:
            cli.check_output(args.json, "the result table")
    return args


def config_for(args, algo: str, beta: float, seed: int) -> RLConfig:
    return RLConfig(algo=algo, steps=args.steps, prompts_per_step=args.prompts, group_size=args.group_size,
                    beta=beta, prm_reward=args.prm_reward, lr=args.lr, epochs=args.epochs, clip_eps=args.clip_eps,
                    clip_eps_high=args.clip_eps_high, kl=args.kl, use_std=not args.no_std, loss_agg=args.loss_agg,
                    temperature=args.temperature, max_new_tokens=args.max_new_tokens, credit=args.credit,
                    value_lr=args.value_lr, baseline=args.ppo_baseline, skip_flat=not args.keep_flat, lora_r=args.lora, seed=seed).check()


def load_problems(path, what: str, n: int | None) -> list[dict]:
    records = read_records(path, "problem")
    for i, rec in enumerate(records, start=1):
        if not str(rec.get("answer", "")).strip():
            raise RfprmError(f"{path}: {what} problem {i} has no 'answer'; the rule reward needs one")
    return list(records[:n] if n else records)


def world_split(n: int, seed: int, n_ops: tuple, exclude: frozenset) -> list[dict]:
    """n world problems of seed with a number of operations in n_ops, none of them in exclude."""
    draw, out = n, []
    while len(out) < n:
        out = [p for p in world.make_problems(draw, seed, exclude=exclude) if len(p.ops) in n_ops][:n]
        draw *= 4
    return [{"problem": p.text, "answer": str(p.answer)} for p in out]


def problem_sets(args) -> tuple[list[dict], list[dict]]:
    """(training problems, held-out problems): --data / --eval-data, else the built-in world's
    training split and its reserved evaluation problems (or, with --validation, a validation split)."""
    n_ops = PROBLEM_SETS[args.problems]
    train_ops = PROBLEM_SETS[args.train_problems or args.problems]
    held = held_out_texts()
    train = load_problems(args.data, "training", None) if args.data else world_split(2000, TRAIN_SEED, train_ops, held)
    if args.eval_data:
        return train, load_problems(args.eval_data, "evaluation", args.eval_problems)
    if args.validation:
        used = held | {t["problem"] for t in train}
        return train, world_split(args.eval_problems, VALIDATION_SEED, n_ops, frozenset(used))
    reserve = [p for p in eval_problems(EVAL_RESERVE) if len(p.ops) in n_ops][:args.eval_problems]
    return train, [{"problem": p.text, "answer": str(p.answer)} for p in reserve]


def judge_for(args):
    """The world's step judge for flawed_correct: it only exists for the built-in world."""
    if args.eval_data:
        return None
    return world.judge_steps


def write_curves(out: Path, history: list[dict]) -> Path | None:
    with atomic_file(out / "curves.csv") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for h in history for k in h)))
        w.writeheader()
        w.writerows(history)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    keys = ["reward", "rule", "kl", "entropy", "clip_frac", "flat_groups"]
    titles = {"rule": "train accuracy (rule reward)", "heldout_sampled": "held-out sampled accuracy"}
    if any("heldout_sampled" in h for h in history):
        keys.append("heldout_sampled")
    fig, axes = plt.subplots(2, 4 if len(keys) > 6 else 3, figsize=(14 if len(keys) > 6 else 11, 5.5))
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys):
        points = [(h["step"], h[k]) for h in history if k in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if k == "heldout_sampled" else None)
        ax.set_title(titles.get(k, k))
        ax.set_xlabel("step")
    fig.tight_layout()
    with atomic_file(out / "curves.png", "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return out / "curves.png"


def check_prm(args, cfg: RLConfig):
    """Load the PRM when the run uses it and refuse dense PPO on a PRM without step scores."""
    if cfg.beta == 0:
        return
    prm = load_prm(resolve_path(args.prm), device="cpu")
    if cfg.algo == "ppo" and prm.head != "step":
        raise RfprmError(f"--algo ppo places a reward on every thinking step, but {args.prm} has a {prm.head} "
                         f"head (no step scores); use --algo grpo or a step-head PRM")


def check_out(args, cfg: RLConfig, out: Path) -> dict:
    """--resume only continues the same run; a fresh run never overwrites one."""
    run_id = run_id_of(cfg, args.model, args.prm if cfg.beta > 0 else None)
    held = read_run_id(out)
    if args.resume:
        if held is None:
            raise RfprmError(f"--resume: no RL checkpoint in {out}/rl_state (start without --resume)")
        if held != run_id:
            diff = sorted(k for k in set(held) | set(run_id) if held.get(k) != run_id.get(k))
            raise RfprmError(f"--resume: {out} holds a different run (differs in {', '.join(diff)})")
    elif held is not None:
        raise RfprmError(f"{out} already holds an RL run; pass --resume to continue it or choose another --out")
    return run_id


def plan_runs(args) -> list[tuple[str, RLConfig, Path]]:
    """(method, config, output dir) of every run, all checked before anything slow starts."""
    if not args.compare:
        beta = DEFAULTS["beta"] if args.beta is None else args.beta
        method = "ppo-dense" if args.algo == "ppo" else ("grpo-mix" if beta > 0 else "grpo-rule")
        plan = [(method, config_for(args, args.algo, beta, args.seed), args.out)]
    else:
        mix_beta = DEFAULTS["beta"] if args.beta is None else args.beta
        plan = [(m, config_for(args, spec["algo"], mix_beta if spec["beta"] is None else spec["beta"], seed),
                 args.out / f"{m}-seed{seed}")
                for seed in range(args.seed, args.seed + args.seeds) for m, spec in COMPARE.items()
                if m in args.methods]
    if args.dry_run:                   # an estimate reads the configs only, not the weights
        load_config(resolve_path(args.model))
    else:
        load_model(resolve_path(args.model), device="cpu")   # a missing or broken checkpoint fails here
    for _, cfg, out in plan:
        if not args.dry_run:
            check_prm(args, cfg)
        check_out(args, cfg, out)
    return plan


def run_settings(args, cfg: RLConfig, train: list[dict]) -> RunSettings:
    """What one RL step holds: the policy training on every sampled row (prompt + answer), the
    KV cache of sampling them, a reference copy when --kl > 0, the PRM when beta > 0, and PPO's
    value head (a linear on the policy's hidden states, not a second model)."""
    model_dir = resolve_path(args.model)
    cfg_m, tok = load_config(model_dir), load_tokenizer(model_dir)
    prompt_len = max(len(tok.chat([{"role": "user", "content": world.problem_prompt(p["problem"])}],
                                  add_generation_prompt=True)) for p in train[:500])
    rows, length = cfg.prompts_per_step * cfg.group_size, prompt_len + cfg.max_new_tokens
    dtype = "bfloat16" if str(args.device).startswith("cuda") else (cfg_m.torch_dtype or "float32")
    return RunSettings(batch=rows, seq_len=length, dtype=dtype, train=True, lora_r=cfg.lora_r,
                       sample_batch=rows, sample_len=length, reference_copies=int(cfg.kl > 0),
                       prm=load_config(resolve_path(args.prm)) if cfg.beta > 0 else None,
                       head_params=cfg_m.hidden_size + 1 if cfg.algo == "ppo" else 0)


def check_memory(args, plan, train) -> None:
    """Print the memory estimate of the largest planned run and refuse one that does not fit
    (rfprm.memory.preflight; --force runs anyway). --dry-run stops after it."""
    model_cfg = load_config(resolve_path(args.model))
    estimates = [estimate(model_cfg, run_settings(args, cfg, train)) for _, cfg, _ in plan]
    _, cfg, _ = plan[max(range(len(plan)), key=lambda i: estimates[i].total)]
    preflight(model_cfg, run_settings(args, cfg, train), args.device, force=args.force,
              quiet=not args.dry_run)


def one_run(args, cfg: RLConfig, out: Path, train, test, judge, tag: str) -> dict:
    model_dir = resolve_path(args.model)
    model, tok = load_model(model_dir, device=args.device), load_tokenizer(model_dir)
    prm = load_prm(resolve_path(args.prm), device=args.device) if cfg.beta > 0 else None
    run_id = check_out(args, cfg, out)
    bar = tqdm(total=cfg.steps, desc=tag, dynamic_ncols=True)
    def on_step(h):
        if args.eval_every and h["step"] % args.eval_every == 0:
            r = evaluate(model, tok, test, world.problem_prompt, None, cfg.temperature, args.eval_samples,
                         cfg.max_new_tokens, seed=10_000 + cfg.seed)
            h.update(heldout_sampled=r["accuracy"], heldout_greedy=r["greedy"])
            tqdm.write(f"{tag} step {h['step']}: held-out sampled {fmt(r['accuracy'])}  greedy {fmt(r['greedy'])}")
        bar.update(1)
        bar.set_postfix(reward=f"{h['reward']:.3f}", rule=f"{h['rule']:.3f}", kl=f"{h['kl']:.4f}")
    history = train_rl(model, tok, prm, train, world.problem_prompt, cfg, out, run_id, args.resume, on_step=on_step)
    bar.close()
    after = evaluate(model, tok, test, world.problem_prompt, judge, cfg.temperature, args.eval_samples,
                     cfg.max_new_tokens, seed=10_000 + cfg.seed)
    if cfg.lora_r:
        policy = save_adapter(model, out / "adapter", base=str(args.model))
    else:
        with atomic_dir(out / "model") as tmp:
            save_model(model, tmp)
            tok.save(tmp)
        policy = out / "model"
    plot = write_curves(out, history)
    print(f"{tag}: curves in {out / 'curves.csv'}" + (f", picture in {plot}" if plot else "")
          + f", {'LoRA adapter' if cfg.lora_r else 'policy'} in {policy}")
    return after


def fmt(x) -> str:
    return "n/a" if x is None else f"{100 * x:5.1f}"


def mean_spread(values) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{100 * statistics.mean(vals):5.1f} ± {100 * sd:4.1f}"


def write_json(path, start: dict, runs: list, args, t0: float):
    with atomic_file(path) as f:
        json.dump({"start": start, "runs": runs, "args": {k: str(v) for k, v in vars(args).items()},
                   "seconds": time.time() - t0}, f, indent=2)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    train, test = problem_sets(args)
    judge = judge_for(args)
    plan = plan_runs(args)
    check_memory(args, plan, train)
    if args.dry_run:
        print(f"dry run: {len(plan)} run(s) planned, nothing trained or written")
        return
    model_dir = resolve_path(args.model)
    start_model = load_model(model_dir, device=args.device)
    start = evaluate(start_model, load_tokenizer(model_dir), test, world.problem_prompt, judge, args.temperature,
                     args.eval_samples, args.max_new_tokens, seed=10_000)
    del start_model
    print(f"start on {len(test)} held-out problems: sampled {fmt(start['accuracy'])}  greedy {fmt(start['greedy'])}"
          f"  flawed_correct {fmt(start['flawed_correct'])}")
    runs = []
    for method, cfg, out in plan:
        runs.append({"method": method, "seed": cfg.seed,
                     **one_run(args, cfg, out, train, test, judge, f"{method} s{cfg.seed}")})
        r = runs[-1]
        print(f"{method} seed {cfg.seed}: sampled {fmt(r['accuracy'])}  greedy {fmt(r['greedy'])}  "
              f"flawed_correct {fmt(r['flawed_correct'])}", flush=True)
        if args.json:   # after every run, so a long --compare leaves its finished runs behind
            write_json(args.json, start, runs, args, t0)
    print(f"\n{'method':<11} {'seeds':>5} {'sampled acc':>13} {'greedy acc':>13} {'flawed_correct':>15}")
    print(f"{'start':<11} {'':>5} {fmt(start['accuracy']):>13} {fmt(start['greedy']):>13} {fmt(start['flawed_correct']):>15}")
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        print(f"{method:<11} {len(rs):>5} {mean_spread(r['accuracy'] for r in rs):>13} "
              f"{mean_spread(r['greedy'] for r in rs):>13} {mean_spread(r['flawed_correct'] for r in rs):>15}")
    print(f"(± : standard deviation over seeds; {len(test)} held-out problems x {args.eval_samples} samples; "
          f"{time.time() - t0:.0f} s in all)")


if __name__ == "__main__":
    cli_main(main)
