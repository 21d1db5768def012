"""How often does the default first stage learn to verify in time? Issue #5's seed question.

    python experiments/seed_sweep.py --seed 1                       # the default recipe, seed 1
    python experiments/seed_sweep.py --seed 1 --careless 0.3        # 30% of the pool error-dense
    python experiments/seed_sweep.py --seed 2 --device cuda         # bf16 autocast on a GPU

The default `train_prm.py` run, cut to what decides its F1: the world's splits for --seed
(train_prm.world_splits), labels without rollouts (the first stage trains the step loss alone),
the first 4 of tiny-policy's layers, the first stage on the judge's verdicts (--steps, lr, LM
auxiliary as train_prm's defaults), held-out F1 / AUC every --every steps; then the head-only
second stage on the fused step rewards with lambda_final = 0 (no trajectory rewards here, so the
step-only ablation's second stage). One line per evaluation, for comparing seeds by their
curves. Options that are not train_prm's: --careless replaces a share of the training pool by
"careless" traces (every step slips with --slip-p; later steps compute from the written values;
the style of the clean teacher, so the errors cannot be told from the style). Not a test.
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


def marker_aux_loss(spec: PRMTrainSpec, weight: float):
    """make_loss(spec) plus a marker auxiliary: at each step's <extra_0>, the PRM's LM head (its
    tied embeddings) must name the units digit of the step's CORRECT result (its last
    `a op b = c`, recomputed from the written a and b), on every trace. The idea: the marker must
    then fetch the result the LM predicts at `=`, half of what comparing it with the written c needs."""
    import torch.nn.functional as F
    from rfprm.kernels import linear_cross_entropy
    from rfprm.prm import prm_loss
    from rfprm.world.judge import parse_equations
    from rfprm.world.problems import apply
    cache = {}

    def target(prm, window: tuple) -> int:
        if window not in cache:
            eqs = parse_equations(prm.tok.decode(list(window)))
            cache[window] = (prm.tok.encode(str(abs(apply(eqs[-1].op, eqs[-1].a, eqs[-1].b)) % 10))[0]
                             if eqs else -100)
        return cache[window]

    def loss_fn(prm, item):
        batch, rows_sound = item
        batch = batch.to(prm.device)
        hidden = prm.model(batch.input_ids)
        loss, metrics = prm_loss(prm, batch, spec.lambda_step, spec.lambda_final, hidden)
        if spec.lm_aux > 0 and rows_sound.any():             # as make_loss
            rows_sound = rows_sound.to(prm.device)
            ids = batch.input_ids[rows_sound]
            h = hidden[rows_sound][:, :-1]
            targets = ids[:, 1:].clone()
            targets[targets == prm.tok.step_id] = -100
            targets[targets == prm.tok.pad_id] = -100
            lm = linear_cross_entropy(h.reshape(-1, h.shape[-1]), prm.model.embed_tokens.weight, targets.reshape(-1))
            loss = loss + spec.lm_aux * lm
            metrics["lm"] = lm.item()
        ids = batch.input_ids.cpu()
        prev, targets = {}, []
        for r, c in zip(batch.step_rows.tolist(), batch.step_cols.tolist()):
            start = max(prev.get(r, 0) + 1, c - 30)            # this step's tokens only
            targets.append(target(prm, tuple(ids[r, start:c].tolist())))
            prev[r] = c
        t = torch.tensor(targets, device=hidden.device)
        if (t >= 0).any():
            h = hidden[batch.step_rows, batch.step_cols]       # the backbone's output is already normed
            aux = F.cross_entropy((h @ prm.model.embed_tokens.weight.t()).float(), t, ignore_index=-100)
            loss = loss + weight * aux
            metrics["marker"] = aux.item()
        return loss, metrics
    return loss_fn


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
                    help="first stage: weight of the marker auxiliary (marker_aux_loss)")
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
                        weight_decay=a.weight_decay)
    first = train_prm.first_stage_records(lab, "quality")
    if a.marker_aux:                                   # the first stage's loss only
        import rfprm.prm_train as pt
        plain = pt.make_loss
        pt.make_loss = lambda s: marker_aux_loss(s, a.marker_aux) if s.lambda_final == 0 and not s.freeze_backbone \
            else plain(s)
    prm = train_prm_model(lm, tok, hide_eval_fields(first), spec, "rfprm", callback=cb(1, a.steps), desc="stage 1")
    if a.second_stage_steps:
        with __import__("tempfile").TemporaryDirectory() as d:
            prm.save(d)
            s2 = replace(spec, steps=a.second_stage_steps, lr=2e-4, freeze_backbone=True, lm_aux=0.0, compile=False,
                         schedule="cosine")
            train_prm_model(lm, tok, hide_eval_fields(lab), s2, "rfprm", callback=cb(2, s2.steps), desc="stage 2",
                            init_prm=d)


if __name__ == "__main__":
    main()
