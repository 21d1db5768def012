"""How often does the default first stage learn to verify in time? Issue #5's seed question.

    python experiments/seed_sweep.py --seed 1                       # the previous default (2,200 steps), seed 1
    python experiments/seed_sweep.py --seed 1 --steps 2000 --marker-aux 0.5 --compile   # today's default
    python experiments/seed_sweep.py --seed 1 --careless 0.3        # 30% of the pool error-dense
    python experiments/seed_sweep.py --seed 2 --device cuda         # bf16 autocast on a GPU (--fp32: not)

A `train_prm.py` run, cut to what decides its F1: the world's splits for --seed
(train_prm.world_splits), labels without rollouts (the first stage trains the step loss alone),
the first 4 of tiny-policy's layers, the first stage on the judge's verdicts (--steps, lr, LM
auxiliary as train_prm's defaults), held-out F1 / AUC every --every steps; then the head-only
second stage on the fused step rewards with lambda_final = 0 (no trajectory rewards here, so the
step-only ablation's second stage). One line per evaluation, for comparing seeds by their
curves. Options that are not train_prm's: --careless replaces a share of the training pool by
"careless" traces (every step slips with --slip-p; later steps compute from the written values;
the style of the clean teacher, so the errors cannot be told from the style); --schedule and
--weight-decay set TrainConfig's. --marker-aux turns on the marker auxiliary, which train_prm.py
now uses by default (0.5). Not a test.
"""
import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
import train_prm  # noqa: E402
from rfprm import world  # noqa: E402
from rfprm.labels import world_labeller  # noqa: E402
from rfprm.prm_train import PRMTrainSpec, evaluate_prm, hide_eval_fields, keep_layers, train_prm_model  # noqa: E402


def careless_traces(n: int, seed: int, exclude: frozenset, slip_p: float) -> list[dict]:
    """Traces in the clean teacher's words whose every step slips with probability slip_p."""
    from rfprm.world.problems import solve
    from rfprm.world.teachers import _in_bounds, slipped_values
    from rfprm.world.traces import written_trace
    rng, out = random.Random(seed), []
    for p in world.make_problems(n, seed, exclude=exclude):
        for _ in range(20):
            written = {}
            for k in range(len(p.ops)):
                if rng.random() < slip_p:
                    cur = solve(p.tree, written)
                    if cur[k].result >= 1:
                        written[k] = slipped_values(cur[k].result, rng)[0]
            ops = solve(p.tree, written)
            if _in_bounds(ops):
                break
        else:
            ops, written = list(p.ops), {}
        tr = written_trace(ops, first_error=min(written) if written else -1)
        out.append({"problem": p.text, "trajectory": tr.trajectory, "response": tr.response,
                    "answer": str(p.answer), "teacher": "careless", "first_error": tr.first_error})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2200)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--second-stage-steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lm-aux", type=float, default=0.5)
    ap.add_argument("--bucket", type=int, default=8)
    ap.add_argument("--schedule", default="cosine", choices=["cosine", "wsd"])
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--marker-aux", type=float, default=0.0,
                    help="first stage: weight of the marker auxiliary (PRMTrainSpec.marker_aux; train_prm's "
                         "default is 0.5). The README's runs used this script's first version of it, which "
                         "read each step's text back from up to 30 token ids before its marker: the same targets, "
                         "but for a first step without an equation, which could take the response's last one")
    ap.add_argument("--prm-layers", type=int, default=4)
    ap.add_argument("--careless", type=float, default=0.0, help="share of the pool replaced by careless traces")
    ap.add_argument("--slip-p", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    args = train_prm.parse_args(["--seed", str(a.seed), "--n-train", str(a.n_train)])
    train, val, test, used = train_prm.world_splits(args)
    if a.careless > 0:
        k = int(a.careless * len(train))
        train = train[:len(train) - k] + careless_traces(k, a.seed * 10 + 7, used, a.slip_p)
    t0 = time.time()
    lab = world_labeller(None)(hide_eval_fields(train), progress=False)
    print(f"labelled {len(lab)} in {time.time() - t0:.0f}s", flush=True)
    lm, tok = rfprm.load_model("tiny-policy", device=a.device), rfprm.load_tokenizer("tiny-policy")
    keep_layers(lm, a.prm_layers)
    t0 = time.time()

    def cb(stage, steps):
        def f(step, prm):
            if step % a.every == 0 or step == steps:
                prm.eval()
                r = evaluate_prm(prm, val, test)
                prm.train()
                print(f"stage {stage} step {step} {time.time() - t0:.0f}s F1 {r['f1']:.1f} flawed {r['flawed_acc']:.1f} "
                      f"flawless {r['flawless_acc']:.1f} AUC {r['auc']:.1f} th {r['threshold']:.3f}", flush=True)
        return f
    spec = PRMTrainSpec(steps=a.steps, batch_size=32, lr=a.lr, seed=a.seed, lambda_final=0.0, lm_aux=a.lm_aux,
                        bucket=a.bucket, ckpt_every=0, bf16=a.device.startswith("cuda") and not a.fp32,
                        compile=a.compile, schedule=a.schedule,
                        weight_decay=a.weight_decay, marker_aux=a.marker_aux)
    first = train_prm.first_stage_records(lab, "quality")
    prm = train_prm_model(lm, tok, hide_eval_fields(first), spec, "rfprm", callback=cb(1, a.steps), desc="stage 1",
                          marker_target=world.step_result)
    if a.second_stage_steps:
        with __import__("tempfile").TemporaryDirectory() as d:
            prm.save(d)
            s2 = replace(spec, steps=a.second_stage_steps, lr=2e-4, freeze_backbone=True, lm_aux=0.0, compile=False,
                         schedule="cosine")
            train_prm_model(lm, tok, hide_eval_fields(lab), s2, "rfprm", callback=cb(2, s2.steps), desc="stage 2",
                            init_prm=d)


if __name__ == "__main__":
    main()
