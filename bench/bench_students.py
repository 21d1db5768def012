"""A select_data.py student's training step, side by side: plain random batches against length-
bucketed ones, eager against torch.compile (`rfprm.model.compile_forward`), on world traces.

    python bench/bench_students.py --threads 1

Each variant trains a fresh copy of tiny-base for --steps steps twice (the first pass includes
compiling) and prints milliseconds per step and the padded tokens per batch. Only the ratios
within one run mean anything; the absolute times depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rfprm.checkpoint import load_model  # noqa: E402
from rfprm.errors import resolve_path  # noqa: E402
from rfprm.model import compile_forward  # noqa: E402
from rfprm.selection import StudentSpec, lm_loss, make_batches, student_examples  # noqa: E402
from rfprm.tokenizer import load_tokenizer  # noqa: E402
from rfprm.trainer import TrainConfig, train  # noqa: E402
from rfprm.world import make_traces  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny-base")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    d = resolve_path(args.base)
    base, tok = load_model(d), load_tokenizer(d)
    examples = student_examples(tok, make_traces(1000, 5))
    cfg = TrainConfig(steps=args.steps, lr=StudentSpec.lr, warmup=5, log_every=10)
    print(f"{'batches':<10}{'forward':<10}{'ms/step (1st)':>15}{'ms/step (2nd)':>15}{'tokens/batch':>14}")
    for bucket in (1, 8):
        batch_at = make_batches(examples, args.batch_size, 0, tok.pad_id or 0, 1024, bucket)
        tokens = sum(batch_at(s, 0)[0].numel() for s in range(args.steps)) / args.steps
        for compiled in (False, True):
            model = copy.deepcopy(base)
            compile_forward(model.model, compiled)
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                train(model, lm_loss, batch_at, cfg, desc="bench")
                times.append(1000 * (time.perf_counter() - t0) / args.steps)
            print(f"{'bucketed' if bucket > 1 else 'plain':<10}{'compiled' if compiled else 'eager':<10}"
                  f"{times[0]:>15.0f}{times[1]:>15.0f}{tokens:>14.0f}")


if __name__ == "__main__":
    main()
