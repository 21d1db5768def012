"""The memory estimate (rfprm/memory.py): exact parameter counts at the real Qwen2.5 shapes, a
measured training step at a small size within 25% of the estimate, and the refusal to start
a run that does not fit unless forced."""
import json
import os
import subprocess
import sys

import pytest
import torch

import rfprm
from rfprm.config import PRESETS
from rfprm.errors import RfprmError
from rfprm.lora import LoraConfig, apply_lora
from rfprm.memory import RunSettings, estimate, lora_parameter_count, parameter_count, preflight

from conftest import ROOT

# One training step in a fresh process: peak resident memory (VmHWM, reset first) minus the
# resident memory before the model exists. Tensors of 64 KiB and more are mmapped
# (MALLOC_MMAP_THRESHOLD_), so freed memory leaves the process and the peak is the live peak.
# Two AdamW steps: from the second on, the optimizer state is alive during backward.
CHILD = r"""
import json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from rfprm.config import ModelConfig
from rfprm.lora import LoraConfig, apply_lora
from rfprm.model import Qwen2ForCausalLM
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
def train(model, ids, steps):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        logits = model(ids[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten()).backward()
        opt.step()
cfg = ModelConfig(**{cfg!r})
train(Qwen2ForCausalLM(cfg.replace(num_hidden_layers=1)).train(), torch.randint(0, 64, (1, 9)), 1)  # warm-up
ids = torch.randint(0, cfg.vocab_size, ({batch}, {seq} + 1))
open("/proc/self/clear_refs", "w").write("5")
before = rss("VmRSS")
model = Qwen2ForCausalLM(cfg).train()
model.model.gradient_checkpointing = {ckpt!r}
if {lora}:
    apply_lora(model, LoraConfig(r={lora}))
train(model, ids, 2)
print(json.dumps(rss("VmHWM") - before))
"""

SMALL = dict(vocab_size=2048, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)


def measured_peak(batch, seq, ckpt, lora) -> int:
    code = CHILD.format(root=str(ROOT), cfg=SMALL, batch=batch, seq=seq, ckpt=ckpt, lora=lora)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("ckpt,lora", [(False, 0), (True, 0), (True, 8)])
def test_estimate_matches_a_measured_training_step(ckpt, lora):
    est = estimate(rfprm.ModelConfig(**SMALL), RunSettings(batch=4, seq_len=256, dtype="float32", train=True,
                                                           lora_r=lora, grad_checkpointing=ckpt))
    peak = measured_peak(4, 256, ckpt, lora)
    assert 0.75 <= peak / est.total <= 1.25, (peak, est.parts)


@pytest.mark.parametrize("shape", ["qwen2.5-0.5b", "qwen2.5-7b"])
def test_parameter_counts_are_exact_at_real_shapes(shape):
    cfg = rfprm.ModelConfig(**PRESETS[shape])
    with torch.device("meta"):
        model = rfprm.Qwen2ForCausalLM(cfg)
    assert parameter_count(cfg) == model.num_parameters()          # a tied lm_head counted once
    before = {n for n, _ in model.named_parameters()}
    apply_lora(model, LoraConfig(r=16))
    adapters = sum(p.numel() for n, p in model.named_parameters() if n not in before)
    assert adapters == lora_parameter_count(cfg, 16)


def test_lora_and_checkpointing_shrink_a_7b_step():
    cfg = rfprm.ModelConfig(**PRESETS["qwen2.5-7b"])
    full = estimate(cfg, RunSettings(batch=4, seq_len=2048, train=True, lm_loss=False))   # a PRM step
    small = estimate(cfg, RunSettings(batch=4, seq_len=2048, train=True, lm_loss=False, lora_r=16,
                                      grad_checkpointing=True))
    assert 14e9 < full.parts["weights"] < 16e9                      # 7.6B parameters in bf16
    assert full.parts["optimizer (AdamW)"] == 2 * full.parts["weights"]
    assert small.parts["optimizer (AdamW)"] < 0.01 * full.parts["optimizer (AdamW)"]
    assert small.parts["activations"] < 0.15 * full.parts["activations"]
    rl = estimate(cfg, RunSettings(batch=4, seq_len=2048, train=True, lora_r=16, grad_checkpointing=True,
                                   sample_batch=16, sample_len=2048, reference_copies=1, prm=cfg))
    assert {"KV cache", "reference copies", "PRM"} <= set(rl.parts) and rl.total > small.total
    assert "total" in rl.table() and "KV cache" in rl.table()


def test_preflight_refuses_what_does_not_fit_unless_forced(monkeypatch, capsys):
    cfg = rfprm.ModelConfig(**PRESETS["qwen2.5-7b"])
    monkeypatch.setattr("rfprm.memory.free_bytes", lambda device: 8 * 2**30)
    with pytest.raises(RfprmError, match="exceeds the 8.00 GiB free on cuda.*--force"):
        preflight(cfg, RunSettings(train=True), "cuda")
    est = preflight(cfg, RunSettings(train=True), "cuda", force=True)
    out = capsys.readouterr()
    assert "weights" in out.out and "warning" in out.err and est.total > 8 * 2**30
    with pytest.raises(RfprmError, match="unknown dtype"):
        estimate(cfg, RunSettings(dtype="int3"))
