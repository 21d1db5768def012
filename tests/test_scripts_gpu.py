"""The one-GPU flags of the scripts, on the CPU: train_prm.py --lora writes a PEFT adapter that
`peft` loads onto the transformers model with the same logits and that `python -m rfprm.lora
merge` turns into base + adapter; --dry-run prints the memory estimate and writes nothing; a run
the estimate says cannot fit is refused without --force; plain checkpoints refuse LoRA tensors."""
import json
import os
import subprocess
import sys

import pytest
import torch

import rfprm
from rfprm.checkpoint import save_model
from rfprm.errors import RfprmError
from rfprm.lora import LoraConfig, apply_lora, load_lora_prm, remove_lora

from conftest import ROOT

BASE = ROOT / "rfprm" / "checkpoints" / "tiny-policy"


def run(*args, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def lora_prm(tmp_path_factory):
    """A LoRA PRM trained by train_prm.py --quick --lora 4 on the shipped tiny-policy."""
    root = tmp_path_factory.mktemp("lora_prm")
    res = run("train_prm.py", "--quick", "--lora", "4", "--lora-targets", "q_proj,v_proj,o_proj,up_proj,down_proj",
              "--model", BASE, "--out", root / "prm", "--work", root / "work", "--threads", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "memory estimate" in res.stdout and "LoRA adapter" in res.stdout
    return root


def hf_step_prm(path):
    """Qwen2ForProcessRewardModel's shape in transformers: Qwen2Model + score (Linear, ReLU, Linear)."""
    from transformers import Qwen2Model

    class HFStepPRM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Qwen2Model.from_pretrained(path)
            h = self.model.config.hidden_size
            self.score = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))

        def forward(self, input_ids):
            return self.score(self.model(input_ids=input_ids).last_hidden_state)
    return HFStepPRM()


def test_lora_prm_is_a_peft_adapter_with_equal_logits(lora_prm):
    peft = pytest.importorskip("peft")
    out = lora_prm / "prm"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["modules_to_save"] == ["score"]
    assert sorted(config["target_modules"]) == sorted(["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
    assert not (out / "model.safetensors").exists()                   # no copy of the base weights
    ours = load_lora_prm(out)
    trained_b = [p for n, p in ours.named_parameters() if ".lora_B." in n]
    assert trained_b and max(p.abs().max() for p in trained_b) > 0     # the adapters learnt something
    hf = peft.PeftModel.from_pretrained(hf_step_prm(BASE), out).eval()
    ids = torch.randint(0, ours.cfg.vocab_size, (2, 24))
    with torch.no_grad():
        a, b = ours(ids), hf(ids)
        assert (a - b).abs().max() <= 1e-4
        remove_lora(ours, merge=False)                                # the adapters do change the scores
        assert (ours(ids) - a).abs().max() > 1e-4


def test_lora_training_state_holds_what_trains_and_resumes(lora_prm):
    from safetensors.torch import load_file
    names = set(load_file(lora_prm / "work" / "run_0" / "train_state" / "model.safetensors"))
    assert names and all(".lora_" in n or n.startswith("step_head.") for n in names)   # no copy of the base
    before = (lora_prm / "prm" / "adapter_model.safetensors").read_bytes()
    res = run("train_prm.py", "--quick", "--lora", "4", "--lora-targets", "q_proj,v_proj,o_proj,up_proj,down_proj",
              "--model", BASE, "--out", lora_prm / "prm", "--work", lora_prm / "work", "--resume", "--threads", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    again = load_file(lora_prm / "prm" / "adapter_model.safetensors")
    from safetensors.torch import load as load_bytes
    first = load_bytes(before)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)


def test_merge_of_a_lora_prm_is_base_plus_adapter(lora_prm):
    out, merged = lora_prm / "prm", lora_prm / "merged"
    res = run("-m", "rfprm.lora", "merge", "--model", BASE, "--adapter", out, "--out", merged)
    assert res.returncode == 0, res.stderr[-2000:]
    prm, base, plain = load_lora_prm(out), rfprm.load_model(BASE), rfprm.load_prm(merged)
    v = prm.model.layers[2].self_attn.v_proj
    expected = base.model.layers[2].self_attn.v_proj.weight + v.lora_scaling * v.lora_B.weight @ v.lora_A.weight
    torch.testing.assert_close(plain.model.layers[2].self_attn.v_proj.weight, expected)
    torch.testing.assert_close(plain.state_dict()["step_head.0.weight"], prm.state_dict()["step_head.0.weight"])
    assert plain.threshold == pytest.approx(prm.threshold)
    ids = torch.randint(0, prm.cfg.vocab_size, (2, 24))
    with torch.no_grad():
        assert (plain(ids) - prm(ids)).abs().max() <= 1e-4
    record = {"problem": "Compute 3 + 4 * 2.", "trajectory": "First, 4 * 2 = 8.\n\nThen 3 + 8 = 11.",
              "response": "3 + 8 gives 11, so the answer is \\boxed{11}"}
    assert prm.score_batch([record])[0].steps == pytest.approx(plain.score_batch([record])[0].steps, abs=1e-5)


def test_merge_refuses_an_adapter_of_another_base(lora_prm, hf_qwen2, tmp_path):
    other, _ = hf_qwen2(hidden=48)
    res = run("-m", "rfprm.lora", "merge", "--model", other, "--adapter", lora_prm / "prm", "--out", tmp_path / "m")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


@pytest.mark.parametrize("flags, match", [
    (["--lora", "-1"], "positive rank"),
    (["--lora", "4", "--lora-targets", "q_proj,qkv"], "do not exist"),
    (["--lora", "4", "--lora-alpha", "0"], "--lora-alpha"),
    (["--lora", "4", "--set", "prm_layers=3"], "prm_layers"),
])
def test_bad_lora_flags_are_one_line(flags, match, tmp_path):
    res = run("train_prm.py", "--quick", "--out", tmp_path / "prm", "--work", tmp_path / "w", *flags, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert match in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("script, flags", [
    ("train_prm.py", ["--quick", "--lora", "4"]),
    ("train_prm.py", ["--quick"]),
    ("select_data.py", ["--quick", "--sft", "--lora", "4"]),
])
def test_dry_run_prints_the_estimate_and_writes_nothing(script, flags, tmp_path):
    res = run(script, *flags, "--dry-run", "--out", tmp_path / "out", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "memory estimate" in res.stdout and "total" in res.stdout
    assert not any(tmp_path.iterdir()) and not (ROOT / "runs" / "out-work").exists()


def test_a_run_that_cannot_fit_is_refused_unless_forced(monkeypatch, tmp_path, capsys):
    import train_prm
    monkeypatch.setattr("rfprm.memory.free_bytes", lambda device: 1024)
    args = ["--quick", "--lora", "4", "--out", str(tmp_path / "prm"), "--work", str(tmp_path / "w")]
    with pytest.raises(RfprmError, match="exceeds the 0.00 GiB free.*--force"):
        train_prm.main(args)
    assert not any(tmp_path.iterdir())
    train_prm.main(args + ["--force", "--dry-run"])                  # warned, then the dry run stops
    assert "continuing: --force" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_plain_checkpoints_refuse_lora_tensors(tmp_path):
    model = rfprm.load_model(BASE)
    apply_lora(model, LoraConfig(r=2, target_modules=("q_proj",)))
    with pytest.raises(RfprmError, match="save the adapter .*or merge"):
        save_model(model, tmp_path / "m")
    prm = rfprm.load_prm("tiny-prm")
    apply_lora(prm, LoraConfig(r=2, target_modules=("v_proj",)))
    with pytest.raises(RfprmError, match="still carries LoRA adapters"):
        prm.save(tmp_path / "p")
    assert not (tmp_path / "m").exists() and not (tmp_path / "p").exists()
    remove_lora(model, merge=True)
    save_model(model, tmp_path / "m")                                 # merged: a plain checkpoint again
    assert (tmp_path / "m" / "model.safetensors").is_file()
