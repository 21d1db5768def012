"""PRM training steps per second on this machine: eager vs the backbone under torch.compile.

Both run in one process on the same labelled traces, the same batches (train_prm's length
bucketing) and the default recipe's loss (step MSE + trajectory MSE + auxiliary LM loss), so
the printed ratio compares like with like. The compiled run also reports its compile time
(the first steps, which trace and compile each new sequence-length bucket).

    python bench/bench_prm_train.py LABELS.jsonl               # e.g. a train_prm run's labels_train.jsonl
    python bench/bench_prm_train.py LABELS.jsonl --steps 60 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rfprm.checkpoint import load_model  # noqa: E402
from rfprm.data import read_records  # noqa: E402
from rfprm.errors import resolve_path  # noqa: E402
from rfprm.prm import PRM  # noqa: E402
from rfprm.prm_layout import prm_examples  # noqa: E402
from rfprm.prm_train import PRMTrainSpec, _sound, bucketed_batches, hide_eval_fields, make_loss  # noqa: E402
from rfprm.trainer import TrainConfig, make_optimizer  # noqa: E402


def run(prm, loss_fn, batch_at, opt, first: int, steps: int) -> float:
    t0 = time.perf_counter()
    for step in range(first, first + steps):
        loss, _ = loss_fn(prm, batch_at(step, 0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels", help="labelled traces (JSONL with step_rewards)")
    ap.add_argument("--model", default="tiny-policy")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=40, help="untimed steps per mode (compiles there)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = resolve_path(args.model)
    lm = load_model(model_dir)
    from rfprm.tokenizer import load_tokenizer
    tok = load_tokenizer(model_dir)
    records = hide_eval_fields(read_records(args.labels, "labelled"))
    spec = PRMTrainSpec(batch_size=32, lambda_final=0.25, lm_aux=0.5)
    cfg = TrainConfig(steps=10**6, lr=1e-3)
    rates = {}
    for mode in ("eager", "compile"):
        torch.manual_seed(0)
        prm = PRM.from_lm(lm, tok).train()
        examples = prm_examples(prm.tok, records, "rfprm", prm.max_len)
        batch_at = bucketed_batches(examples, [_sound(r) for r in records], spec.batch_size, 0, prm.tok.pad_id)
        if mode == "compile":
            prm.compile_backbone()
        opt = make_optimizer(prm, cfg)
        warm = run(prm, make_loss(spec), batch_at, opt, 0, args.warmup)
        timed = run(prm, make_loss(spec), batch_at, opt, args.warmup, args.steps)
        rates[mode] = args.steps / timed
        print(f"{mode:<8} {rates[mode]:.2f} steps/s  (first {args.warmup} steps: {warm:.1f} s)", flush=True)
    print(f"compile / eager: {rates['compile'] / rates['eager']:.2f}x on {args.threads} threads")


if __name__ == "__main__":
    main()
