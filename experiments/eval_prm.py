"""Evaluate PRM checkpoints on train_prm.py's held-out teacher traces of one seed.

    python experiments/eval_prm.py DIR [DIR ...] [--seed 0]

A PRM trained with another --seed was evaluated by train_prm.py on that seed's held-out
traces; this scores it on the default (seed 0) validation and test traces instead, so every
row of the README's PRM table is measured on the same 400 test traces. The threshold is chosen
on the validation traces as train_prm.py chooses it (the checkpoint is not changed). Not a test.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_prm  # noqa: E402
from rfprm import load_prm  # noqa: E402
from rfprm.prm_train import evaluate_prm  # noqa: E402

argv = sys.argv[1:]
seed = 0
if "--seed" in argv:
    i = argv.index("--seed")
    seed = int(argv[i + 1])
    del argv[i:i + 2]
torch.set_num_threads(2)
_, val, test, _ = train_prm.world_splits(train_prm.parse_args(["--seed", str(seed)]))
print(f"{'PRM':<28}{'F1':>7}{'flawed':>8}{'flawless':>10}{'AUC':>7}{'threshold':>11}")
for d in argv:
    r = evaluate_prm(load_prm(d), val, test)
    print(f"{d:<28}{r['f1']:>7.1f}{r['flawed_acc']:>8.1f}{r['flawless_acc']:>10.1f}{r['auc']:>7.1f}{r['threshold']:>11.3f}")
