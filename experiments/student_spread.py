"""How much select_data.py's students move from one seed to the next, on validation problems,
and whether a weight average or another schedule makes them move less.

    python -m experiments.student_spread --picks TOP.jsonl --seeds 0,1,2,3,4
    python -m experiments.student_spread --picks random --seeds 0,1,2,3,4
    python -m experiments.student_spread --picks TOP.jsonl --seeds 0,1,2 --lr 2e-3 --warmup 60
    python -m experiments.student_spread --prm tiny-prm --drop-teachers misaligned,wrong_plan
    python -m experiments.student_spread --labels tiny-policy --steps 400
    python -m experiments.student_spread --quick

`--picks` is a JSONL file of the traces a student trains on (select_data.py's `--out`: the top k
of the default pool) or `random` (k traces of the default pool drawn with the seed, as
select_data's random method draws them). `--prm DIR` instead scores the default pool with that PRM
and keeps the top k by mean step + --alpha · trajectory, as select_data.py does. `--drop-teachers`
is an ORACLE diagnostic, not a method: it leaves the named world teachers' traces out of the pool
before any pick (their labels are the world's, which no scorer sees), to measure what a scorer that
saw those flaws would give the students. Each seed trains one student from `--base` as
select_data.py does (the default StudentSpec, compiled, bucketed batches; the seed sets the batch
order and, for `random`, the draw) and asks it --n validation problems: fresh problems of the
world that neither the pool nor the reserved evaluation problems hold (select_data.py's test
problems stay untouched). Three read-outs of the same run, each greedy:
- `final`: the weights after the last step (what select_data.py evaluates);
- `ema`: an exponential moving average of the weights over the steps (decay --ema);
- `last50`: the plain mean of the weights over the last 50 steps.
Beside the final weights' answer accuracy, `thinking` is the share of problems whose thinking ends
on the right result (the written `= c` of its last equation; the response may still restate it
wrongly): the answer needs both, a student's thinking and its copying of it into the response.
"""
import argparse
import copy
import json
import statistics
import time
from collections import Counter

import torch

from rfprm.answers import parse_trace
from rfprm.checkpoint import load_model
from rfprm.errors import RfprmError, cli_main, resolve_path
from rfprm.generate import chat_complete
from rfprm.model import compile_forward
from rfprm.prm import PRMScore, load_prm
from rfprm.selection import StudentSpec, accuracy, lm_loss, make_batches, rank, select, student_examples
from rfprm.tokenizer import load_tokenizer
from rfprm.trainer import TrainConfig, train
from rfprm.world import make_traces
from rfprm.world.judge import parse_equations
from rfprm.world.problems import make_problems
from rfprm.world.task import MAX_NEW_TOKENS, TASK, held_out_texts, world_labeller

VAL_SEED = 991   # the validation problems' draw
TAIL = 50        # steps averaged by the last50 read-out


def answer_and_thinking(model, tok, problems, spec: StudentSpec) -> tuple[float, float]:
    """From one greedy pass (rfprm.selection.accuracy's): the share of right answers, and the share
    of problems whose thinking's last written equation result is the answer."""
    outs = chat_complete(model, tok, [TASK.prompt(text) for text, _ in problems], max_new_tokens=spec.max_new_tokens,
                         temperature=0.0, batch_size=spec.eval_batch_size)
    answers = thinking = 0
    for out, (_, answer) in zip(outs, problems):
        answers += TASK.is_correct(out, answer)
        trace = parse_trace(out)
        eqs = parse_equations(trace[0]) if trace else []
        thinking += bool(eqs) and str(eqs[-1].result) == answer
    return answers / len(problems), thinking / len(problems)


def student_readouts(base, tok, records, spec: StudentSpec, warmup: int, seed: int, ema_decay: float,
                     problems) -> dict:
    """Train one student as rfprm.selection.train_student does, keeping two weight averages beside
    it; -> {read-out: accuracy on problems}."""
    model = copy.deepcopy(base)
    cfg = TrainConfig(steps=spec.steps, lr=spec.lr, warmup=warmup, log_every=min(10, spec.steps))
    params = dict(model.named_parameters())
    ema = {n: p.detach().clone() for n, p in params.items()}
    tail = {n: torch.zeros_like(p) for n, p in params.items()}
    first_tail = max(spec.steps - TAIL, 0)

    def keep_averages(step, _model):
        with torch.no_grad():
            for n, p in params.items():
                ema[n].lerp_(p, 1 - ema_decay)
                if step > first_tail:
                    tail[n] += p

    compile_forward(model.model, spec.compile, "the student")
    torch.manual_seed(seed)
    batch_at = make_batches(student_examples(tok, records, TASK), spec.batch_size, seed,
                            tok.pad_id if tok.pad_id is not None else 0, model.cfg.max_position_embeddings,
                            spec.bucket, 1)
    train(model, lm_loss, batch_at, cfg, desc=f"student s{seed}", callback=keep_averages)
    compile_forward(model.model, on=False)
    out = dict(zip(("final", "thinking"), answer_and_thinking(model, tok, problems, spec)))
    for name, weights, scale in (("ema", ema, 1.0), ("last50", tail, 1 / (spec.steps - first_tail))):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(weights[n] * scale)
        out[name] = accuracy(model, tok, problems, spec, TASK)
    return out


def pool_scores(pool, prm, labels, rollouts) -> list:
    """The pool's scores by a PRM, or by the PRM's training labels (world_labeller with `labels`'s
    rollouts; their total is left NaN: `rank` reads the steps and the trajectory score)."""
    texts = [{k: r[k] for k in ("problem", "trajectory", "response", "answer")} for r in pool]
    if prm:
        return load_prm(resolve_path(prm)).score_batch(texts, batch_size=32)
    policy_dir = resolve_path(labels)
    labelled = world_labeller(load_model(policy_dir), load_tokenizer(policy_dir), n_rollouts=rollouts)(texts)
    return [PRMScore(steps=r["step_rewards"], trajectory=r["trajectory_reward"], total=float("nan"))
            for r in labelled]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--picks", default="random", help="JSONL traces (select_data.py --out), or `random` (default)")
    ap.add_argument("--prm", help="score the default pool with this PRM (dir or shipped name) and train on its "
                    "top k (instead of --picks)")
    ap.add_argument("--labels", metavar="POLICY", help="rank the default pool by the PRM's training labels (fused "
                    "step labels, template-guided rollouts of POLICY) instead of a PRM's scores")
    ap.add_argument("--rollouts", type=int, default=4, help="--labels: rollouts per trace (default 4, as train_prm.py)")
    ap.add_argument("--alpha", type=float, default=1.0, help="--prm, --labels: weight of the trajectory score "
                    "(default 1)")
    ap.add_argument("--drop-teachers", default="", metavar="LIST", help="ORACLE diagnostic: leave these world "
                    "teachers' traces out of the pool first, e.g. misaligned,wrong_plan")
    ap.add_argument("--seeds", default="0,1,2", help="student seeds, comma-separated")
    ap.add_argument("--base", default="tiny-base", help="the students' base (dir or shipped name)")
    ap.add_argument("--k", type=int, default=1000, help="--picks random: traces drawn")
    ap.add_argument("--n", type=int, default=400, help="validation problems asked")
    ap.add_argument("--steps", type=int, default=StudentSpec.steps)
    ap.add_argument("--lr", type=float, default=StudentSpec.lr)
    ap.add_argument("--batch-size", type=int, default=StudentSpec.batch_size)
    ap.add_argument("--bucket", type=int, default=StudentSpec.bucket, help="batches sorted by length together "
                    "(1: plain random batches)")
    ap.add_argument("--warmup", type=int, default=None, help="default: select_data's (15, at most steps // 10)")
    ap.add_argument("--ema", type=float, default=0.9, help="decay of the ema read-out, in [0, 1)")
    ap.add_argument("--json", help="write the table here")
    ap.add_argument("--quick", action="store_true", help="a few traces, steps and problems (for the tests)")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise RfprmError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    if args.quick:
        args.steps, args.n, args.k, args.batch_size = 4, 8, 16, 4
    if min(args.steps, args.n, args.k, args.batch_size, args.bucket) < 1 or not args.lr > 0 or not 0 <= args.ema < 1:
        raise RfprmError("--steps, --n, --k, --batch-size, --bucket must be >= 1, --lr > 0 and --ema in [0, 1)")
    pool = make_traces(200 if args.quick else 4000, 0, exclude=held_out_texts())   # select_data's default pool
    used = frozenset(held_out_texts() | {r["problem"] for r in pool})
    drop = {t.strip() for t in args.drop_teachers.split(",") if t.strip()}
    unknown = drop - {r["teacher"] for r in pool}
    if unknown:
        raise RfprmError(f"--drop-teachers: no teacher {sorted(unknown)[0]!r} in the pool; expected names from "
                         f"{', '.join(sorted({r['teacher'] for r in pool}))}")
    if args.prm and args.labels:
        raise RfprmError("--prm and --labels are two rankings: give one")
    if args.rollouts < 1:
        raise RfprmError(f"--rollouts must be >= 1, got {args.rollouts}")
    if drop and args.picks != "random" and not (args.prm or args.labels):
        raise RfprmError("--drop-teachers drops from the default pool: use it with --prm, --labels or --picks random")
    pool = [r for r in pool if r["teacher"] not in drop]
    if args.k > len(pool):
        raise RfprmError(f"--k {args.k} is larger than the pool ({len(pool)} traces)")
    if args.prm or args.labels:
        scores = pool_scores(pool, args.prm, args.labels, args.rollouts)
        picked = [pool[i] for i in rank(scores, args.alpha)[: args.k]]
        counts = Counter(r["teacher"] for r in picked)
        print("the picks by teacher: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
        scorer = args.prm or f"the training labels ({args.labels}, {args.rollouts} rollouts)"
        args.picks = f"top {args.k} by {scorer}, α = {args.alpha:g}" + (f", without {','.join(sorted(drop))}"
                                                                         if drop else "")
    elif args.picks != "random":
        with open(args.picks) as f:
            picked = [json.loads(line) for line in f if line.strip()]
        if not picked:
            raise RfprmError(f"--picks {args.picks}: no traces")
    problems = [(p.text, str(p.answer)) for p in make_problems(args.n, VAL_SEED, exclude=used)]
    warmup = args.warmup if args.warmup is not None else min(StudentSpec.warmup, args.steps // 10)
    spec = StudentSpec(steps=args.steps, lr=args.lr, batch_size=args.batch_size, bucket=args.bucket,
                       max_new_tokens=MAX_NEW_TOKENS,
                       compile=not args.quick)
    base_dir = resolve_path(args.base)
    base, tok = load_model(base_dir), load_tokenizer(base_dir)
    rows = {}
    for seed in seeds:
        t0 = time.time()
        records = (picked if args.picks != "random" else
                   [pool[i] for i in select("random", pool, args.k, seed=seed).indices])
        rows[seed] = student_readouts(base, tok, records, spec, warmup, seed, args.ema, problems)
        print(f"seed {seed}: " + "  ".join(f"{k} {100 * v:.1f}" for k, v in rows[seed].items())
              + f"  ({time.time() - t0:.0f} s)", flush=True)
    print(f"validation accuracy % on {args.n} fresh problems, {len(seeds)} seeds ({args.picks}; {args.steps} steps "
          f"of {args.batch_size} at lr {args.lr:g}, warm-up {warmup}, bucket {args.bucket})")
    for name in ("final", "thinking", "ema", "last50"):
        values = [100 * r[name] for r in rows.values()]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {name:<9}{statistics.fmean(values):6.1f} ± {std:4.1f}   " + "  ".join(f"{v:.1f}" for v in values))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(s): r for s, r in rows.items()}, f, indent=1)


if __name__ == "__main__":
    cli_main(main)
