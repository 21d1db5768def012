"""Data-parallel training: `torchrun --nproc_per_node 2` gives the single-process run.

The test saves a tiny PRM and labelled traces, trains it once in this process and once under a
real `torchrun` with 2 gloo processes (this file is also the worker script), with the same
global batch (grad_accum = 4 micro-batches), and compares the logged losses and the weights.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rfprm import distributed  # noqa: E402
from rfprm.errors import RfprmError  # noqa: E402
from rfprm.prm import load_prm  # noqa: E402
from rfprm.prm_train import PRMTrainSpec, bucketed_batches, make_loss  # noqa: E402
from rfprm.trainer import TrainConfig, train  # noqa: E402

CFG = dict(steps=4, lr=1e-2, warmup=0, log_every=1, grad_accum=4)


def run_training(work: Path, out: Path) -> list[dict]:
    """Train the saved PRM on the saved traces; the same code runs in one or in N processes."""
    torch.manual_seed(0)
    prm = load_prm(work / "prm")
    records = json.loads((work / "traces.json").read_text())
    examples = prm.examples(records)
    sound = [min(r["step_rewards"]) > 0.5 for r in records]
    batches = bucketed_batches(examples, sound, batch_size=2, seed=0, pad_id=prm.tok.pad_id,
                               grad_accum=CFG["grad_accum"], bucket=2)
    loss = make_loss(PRMTrainSpec(lambda_final=0.5, lm_aux=0.5))   # train_prm.py's loss, LM term included
    history = train(prm, loss, batches, TrainConfig(**CFG), out_dir=out)
    if distributed.is_main():
        weights = {n: t.tolist() for n, t in prm.state_dict().items() if n.startswith("score.")}
        (out / "result.json").write_text(json.dumps({"history": history, "head": weights,
                                                     "world": distributed.world_size()}))
    distributed.cleanup()
    return history


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from rfprm import preset, world
    from rfprm.bpe import train_bpe
    from rfprm.model import Qwen2ForCausalLM, init_weights
    from rfprm.prm import PRM
    root = tmp_path_factory.mktemp("ddp")
    tok = train_bpe(world.world_corpus(200, 0), 300, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"])
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(preset("tiny", vocab_size=320, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    init_weights(lm, std=0.2)
    PRM.from_lm(lm, tok).save(root / "prm")
    records = []
    for i, r in enumerate(world.make_traces(8, 3)):
        n = len(r["trajectory"].split("\n\n"))
        records.append({"problem": r["problem"], "trajectory": r["trajectory"], "response": r["response"],
                        "step_rewards": [0.2 if i % 2 == 0 and t == i % n else 0.9 for t in range(n)],
                        "trajectory_reward": 0.1 * (i % 4)})
    (root / "traces.json").write_text(json.dumps(records))
    return root


def torchrun(args, cwd, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_equal_one(work, tmp_path):
    single = run_training(work, tmp_path / "single")
    proc = torchrun([str(work), str(tmp_path / "ddp")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert ddp["world"] == 2
    assert [h["step"] for h in ddp["history"]] == [h["step"] for h in single] == [1, 2, 3, 4]
    assert all(a.keys() == b.keys() for a, b in zip(ddp["history"], single))
    assert "lm" in single[0]            # the auxiliary LM term is part of what is compared
    gaps = [abs(a[key] - b[key]) for a, b in zip(ddp["history"], single) for key in a.keys() - {"step", "lr"}]
    print(f"2 processes vs 1: largest logged-metric gap {max(gaps):.2e} over {len(gaps)} values")
    assert max(gaps) <= 1e-5, (ddp["history"], single)
    assert single[-1]["loss"] != single[0]["loss"]            # it did train
    prm_single = json.loads((tmp_path / "single" / "result.json").read_text())["head"]
    for name, values in ddp["head"].items():
        diff = (torch.tensor(values) - torch.tensor(prm_single[name])).abs().max().item()
        assert diff <= 1e-5, (name, diff)
    # one writer: the checkpoint exists once, complete
    assert (tmp_path / "ddp" / "train_state" / "progress.json").is_file()


def test_batch_not_divisible_by_world_size(work, tmp_path):
    proc = torchrun([str(work), str(tmp_path / "bad"), "--grad-accum", "3"], cwd=tmp_path)
    # each worker prints one line and exits 2; torchrun then adds its own failure summary
    assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("grad_accum = 3 is not divisible by the 2 processes" in e for e in errors)
    assert 'File "' + __file__ not in proc.stderr        # no traceback from rfprm's side
    assert not (tmp_path / "bad" / "train_state").exists()


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.world_size() == 1 and distributed.is_main() and not distributed.init_from_env()
    assert list(distributed.my_micro_batches(3)) == [0, 1, 2]
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.all_reduce_sums({"a": 1.5}) == {"a": 1.5}
    assert distributed.split_global_batch(32) == (32, 1)


def test_shard_and_micro_batches_split_evenly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert list(distributed.my_micro_batches(4)) == [1, 3]
    assert distributed.shard(list("abcd")) == ["c", "d"]
    with pytest.raises(RfprmError, match="batch size = 3 is not divisible by the 2 processes"):
        distributed.shard([1, 2, 3])
    assert distributed.split_global_batch(32) == (16, 2)
    assert distributed.split_global_batch(32, accum_per_rank=4) == (4, 8)
    with pytest.raises(RfprmError, match="batch size 30 cannot be split over 2 processes x 4"):
        distributed.split_global_batch(30, accum_per_rank=4)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RfprmError, match="launch with torchrun"):
        distributed.init_from_env()


if __name__ == "__main__":   # the worker torchrun starts
    from rfprm.errors import cli_main

    def main():
        work, out = Path(sys.argv[1]), Path(sys.argv[2])
        if "--grad-accum" in sys.argv:
            CFG["grad_accum"] = int(sys.argv[sys.argv.index("--grad-accum") + 1])
        run_training(work, out)
    cli_main(main)


def test_micro_batches_split_the_global_batch(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert distributed.micro_batches(32) == (16, 2)           # one micro-batch per process
    assert distributed.micro_batches(32, 4) == (8, 4)
    for bad in ((32, 3), (30, 4), (32, -2)):
        with pytest.raises(RfprmError, match="micro-batches must divide the batch evenly"):
            distributed.micro_batches(*bad, "traces")
