"""How good are the PRM's training labels? Each signal scored as if it were a PRM.

    python -m experiments.label_quality [--n 1000] [--seed 0] [--encoders ngram,tiny-policy]
                                        [--policy tiny-policy] [--rollouts 8] [--quick]

The PRM learns from step labels -- three signals per thinking step, alignment, quality and
coherence, fused by a softmax over their own values -- and from the template-guided
trajectory reward (ReasonFlux-PRM, arXiv 2506.18896: the step-level and trajectory-level
rewards). Before training anything, this asks whether those labels mark what they should:

- wrong steps: first-error F1 (ProcessBench's harmonic mean of accuracy on flawed and on
  flawless traces) and step AUC against the traces' hidden first wrong step, with the best
  threshold on these same traces, so the figures are each signal's ceiling;
- wrong plans: trace AUC, clean traces against the wrong-plan teacher's traces (every step
  locally sound, the problem's structure misread; first_error -1, so the step columns count
  them as flawless). A step signal scores a trace by its mean over steps.

Rows: each step signal alone (alignment and coherence under each encoder Φ of `--encoders`:
hashed n-grams, and a model's own mean-pooled hidden states), quality from the world's default
LLM-like judge (`NoisyJudge`), their fusion, the trajectory reward (rollouts of `--policy`
guided by each trace's extracted template; clean and wrong-plan traces only, where the trace
AUC needs it), the fused label plus the trajectory reward (the paper's selection score with
α = 1), and two *oracle* rows a real user would not have: the world's exact judge, and the
fusion built on it. Then the mean fused label of sound steps, first wrong steps and the steps
after them, per teacher (first encoder).
"""
import argparse
import statistics

from rfprm import world
from rfprm.checkpoint import load_model
from rfprm.encoders import build_encoder
from rfprm.errors import RfprmError, cli_main
from rfprm.evaluate import auc, choose_threshold, evaluate_scores
from rfprm.labels import fuse, policy_rollout, trajectory_rewards
from rfprm.prm_train import hide_eval_fields
from rfprm.tokenizer import load_tokenizer
from rfprm.world.task import MAX_NEW_TOKENS, TASK, world_labeller

STEP_SIGNALS = ("alignment", "quality", "coherence", "fused")


def trace_auc(scores: list[float], records: list[dict]) -> float:
    """AUC of clean traces' scores over wrong-plan traces' scores (percent)."""
    clean = [s for s, r in zip(scores, records) if r["teacher"] == "clean"]
    wrong_plan = [s for s, r in zip(scores, records) if r["teacher"] == "wrong_plan"]
    return 100.0 * auc(clean, wrong_plan)


def step_row(name: str, step_scores: list[list[float]], records: list[dict]) -> dict:
    first_errors = [r["first_error"] for r in records]
    res = evaluate_scores(step_scores, first_errors, choose_threshold(step_scores, first_errors))
    means = [statistics.fmean(s) for s in step_scores]
    return {"signal": name, "f1": res["f1"], "step_auc": res["auc"], "trace_auc": trace_auc(means, records)}


def trajectory_scores(records: list[dict], policy: str, n_rollouts: int, seed: int) -> dict[int, float]:
    """Index -> template-guided trajectory reward, for the clean and wrong-plan traces."""
    model, tok = load_model(policy).eval(), load_tokenizer(policy)
    picked = [i for i, r in enumerate(records) if r["teacher"] in ("clean", "wrong_plan")]
    rollout = policy_rollout(model, tok, temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, seed=seed,
                             progress=True)
    rewards = trajectory_rewards(hide_eval_fields([records[i] for i in picked]), rollout,
                                 TASK.extract_template, TASK.template_prompt, TASK.is_correct, n=n_rollouts)
    return dict(zip(picked, rewards))


def mean_by_position(records: list[dict], labelled: list[dict], teacher: str) -> tuple[list, list, list]:
    """The fused labels of one teacher's traces: sound steps, first wrong steps, steps after one."""
    sound, first, after = [], [], []
    for rec, lab in zip(records, labelled):
        if rec["teacher"] != teacher:
            continue
        f, s = rec["first_error"], lab["step_rewards"]
        sound += s[:len(s) if f < 0 else f]
        if f >= 0:
            first.append(s[f])
            after += s[f + 1:]
    return sound, first, after


def print_table(rows: list[dict]) -> None:
    show = lambda v: "    -" if v is None else f"{v:5.1f}"
    print(f"{'signal':<38} {'F1':>5} {'stepAUC':>7} {'planAUC':>7}")
    for r in rows:
        print(f"{r['signal']:<38} {show(r['f1'])} {show(r['step_auc']):>7} {show(r['trace_auc']):>7}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="world traces to label (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the traces, judge and rollouts (default 0)")
    ap.add_argument("--encoders", default="ngram,tiny-policy",
                    help="comma-separated encoders Φ: 'ngram' or an LM dir / shipped name (default ngram,tiny-policy)")
    ap.add_argument("--policy", default="tiny-policy", help="policy for the template-guided rollouts")
    ap.add_argument("--rollouts", type=int, default=8, help="guided answers per trace (default 8)")
    ap.add_argument("--quick", action="store_true", help="100 traces, 4 rollouts: well under a minute, for the tests")
    args = ap.parse_args()
    n, n_rollouts = (100, 4) if args.quick else (args.n, args.rollouts)
    if n < 10:
        raise RfprmError(f"--n {n}: need at least 10 traces")
    if n_rollouts < 1:
        raise RfprmError(f"--rollouts {n_rollouts}: need at least 1")
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    if not encoders:
        raise RfprmError("--encoders: name at least one encoder")
    records = world.make_traces(n, args.seed)
    hidden = hide_eval_fields(records)
    rows, first_labelled = [], None
    for name in encoders:
        labelled = world_labeller(None, encoder=build_encoder(name))(hidden, progress=True)
        first_labelled = first_labelled or labelled
        for signal in ("alignment", "coherence", "fused"):
            scores = [r["step_rewards"] if signal == "fused" else r["label_parts"][signal] for r in labelled]
            rows.append(step_row(f"{signal} (Φ {name})", scores, records))
    quality = [r["label_parts"]["quality"] for r in first_labelled]
    rows.insert(0, step_row("quality (noisy judge)", quality, records))

    traj = trajectory_scores(records, args.policy, n_rollouts, args.seed)
    keys = sorted(traj)
    sub = [records[i] for i in keys]
    rows.append({"signal": f"trajectory reward ({args.policy}, N={n_rollouts})", "f1": None, "step_auc": None,
                 "trace_auc": trace_auc([traj[i] for i in keys], sub)})
    fused_mean = [statistics.fmean(first_labelled[i]["step_rewards"]) for i in keys]
    rows.append({"signal": f"fused (Φ {encoders[0]}) + trajectory", "f1": None, "step_auc": None,
                 "trace_auc": trace_auc([m + traj[i] for m, i in zip(fused_mean, keys)], sub)})

    oracle = [world.judge_steps(r["problem"], world.split_steps(r["trajectory"])) for r in records]
    rows.append(step_row("ORACLE exact judge", oracle, records))
    fused_oracle = [fuse(lab["label_parts"]["alignment"], q, lab["label_parts"]["coherence"])
                    for lab, q in zip(first_labelled, oracle)]
    rows.append(step_row(f"ORACLE fused, exact judge (Φ {encoders[0]})", fused_oracle, records))

    counts = {t: sum(r["teacher"] == t for r in records) for t in world.TEACHERS}
    print(f"{n} traces, seed {args.seed} ({', '.join(f'{t} {c}' for t, c in counts.items())}); each signal "
          "as a PRM, threshold chosen on these traces; planAUC: clean vs wrong-plan traces")
    print_table(rows)
    show = lambda xs: f"{statistics.fmean(xs):.2f}" if xs else "  - "
    print(f"mean fused label (Φ {encoders[0]}) by step position")
    for teacher in world.TEACHERS:
        sound, first, after = mean_by_position(records, first_labelled, teacher)
        print(f"{teacher:<11} sound {show(sound)}  first error {show(first)}  after it {show(after)}")


if __name__ == "__main__":
    cli_main(main)
