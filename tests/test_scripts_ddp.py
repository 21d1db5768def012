"""The scripts under torchrun on the CPU (gloo): `torchrun --nproc_per_node 2 train_prm.py` gives
the per-step losses and the PRM of one process with the same global batch and micro-batches, rank
0 alone writes, and a batch the processes cannot share stops with one line and writes nothing."""
import json
import os
import subprocess
import sys

import pytest
import torch

import rfprm

from conftest import ROOT

BASE = ROOT / "rfprm" / "checkpoints" / "tiny-policy"
STAGES = ("run_0/train_state", "run_0/stage2/train_state")


def run(args, nproc=1, timeout=600, env=None):
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return subprocess.run([sys.executable, *launcher, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def losses(work):
    return [[row["loss"] for row in json.loads((work / s / "progress.json").read_text())["history"]] for s in STAGES]


def train_prm(tmp_path, name, nproc, *flags):
    out, work = tmp_path / name / "prm", tmp_path / name / "work"
    res = run(["train_prm.py", "--quick", "--model", BASE, "--out", out, "--work", work,
               "--threads", "1", *flags], nproc)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, work, res


def test_two_processes_give_the_losses_of_one(tmp_path):
    out1, work1, _ = train_prm(tmp_path, "one", 1, "--grad-accum", "2")
    out2, work2, res = train_prm(tmp_path, "two", 2, "--grad-accum", "2")
    one, two = losses(work1), losses(work2)
    assert [len(x) for x in one] == [8, 4]                         # every step of both stages logged
    for a, b in zip(one, two):
        assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-5
    assert res.stdout.count("PRM written to") == 1                 # one table, from rank 0
    p1, p2 = rfprm.load_prm(out1).state_dict(), rfprm.load_prm(out2).state_dict()
    assert all(torch.allclose(p1[k], p2[k], atol=1e-5) for k in p1)
    assert not list(tmp_path.glob("two/**/*.tmp"))
    # the comparison can fail: one micro-batch of 16 is another optimisation than two of 8
    _, work3, _ = train_prm(tmp_path, "whole", 1, "--grad-accum", "1")
    assert max(abs(x - y) for x, y in zip(losses(work3)[0], one[0])) > 1e-3


@pytest.mark.parametrize("flags", [["--grad-accum", "3"], ["--grad-accum", "6"]])
def test_a_batch_the_processes_cannot_share_is_one_line(tmp_path, flags):
    res = run(["train_prm.py", "--quick", "--model", BASE, "--out", tmp_path / "prm", "--work", tmp_path / "w",
               *flags], nproc=2, timeout=300)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("micro-batches must divide the batch evenly" in e for e in errors)
    assert "Traceback" not in "\n".join(errors) and not any(tmp_path.iterdir())


STUDENT = """
import sys, torch
import rfprm
from rfprm import distributed
from rfprm.lora import LoraConfig
from rfprm.selection import StudentSpec, accuracy, train_student
from rfprm.world import make_traces
from rfprm.world.task import TASK, eval_problems
distributed.init_from_env()
tok, base = rfprm.load_tokenizer("tiny-base"), rfprm.load_model("tiny-base")
lora = LoraConfig(r=4, alpha=8.0) if sys.argv[2] == "lora" else None
spec = StudentSpec(steps=4, batch_size=8, lr=2e-3, grad_accum=2, max_new_tokens=24, lora=lora)
student = train_student(base, tok, make_traces(16, 0), spec, seed=0, task=TASK)
acc = accuracy(student, tok, [(p.text, str(p.answer)) for p in eval_problems(5)], spec, TASK)
if distributed.is_main():
    torch.save({"state": student.state_dict(), "acc": torch.tensor(acc)}, sys.argv[1])
distributed.cleanup()
"""


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_a_student_trained_by_two_processes_equals_one(tmp_path, kind):
    """select_data.py --sft's students under torchrun: the same weights as one process with the
    same global batch and micro-batches, and the answers asked by two processes add up."""
    script = tmp_path / "student.py"
    script.write_text(STUDENT)
    for nproc in (1, 2):
        res = run([script, tmp_path / f"{nproc}.pt", kind], nproc, env={"PYTHONPATH": str(ROOT)})
        assert res.returncode == 0, res.stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in (1, 2))
    assert one["acc"] == two["acc"]
    for k, v in one["state"].items():
        torch.testing.assert_close(two["state"][k], v, atol=1e-5, rtol=0, msg=k)
    base = rfprm.load_model("tiny-base").state_dict()
    assert any(not torch.equal(base[k], v) for k, v in one["state"].items())   # it did train


def test_select_data_under_torchrun_writes_once(tmp_path):
    res = run(["select_data.py", "--quick", "--sft", "--seeds", "1", "--methods", "random,reasonflux",
               "--out", tmp_path / "top.jsonl", "--json", tmp_path / "r.json", "--threads", "1"], nproc=2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("students: held-out accuracy") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "top.jsonl"]
    assert len((tmp_path / "top.jsonl").read_text().splitlines()) == 12
