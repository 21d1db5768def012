"""LoRA (rfprm/lora.py): only adapters train, decode and checkpointing see them, PEFT loads them
onto the transformers model with the same logits, and the merge command writes base + B A."""
import subprocess
import sys

import pytest
import torch

import rfprm
from rfprm.errors import RfprmError
from rfprm.lora import LoraConfig, apply_lora, load_adapter, merge_checkpoint, remove_lora, save_adapter

from conftest import ROOT


def trained_lora_model(path, r=4, steps=3, targets=None, seed=0):
    """Load `path`, attach adapters and take a few AdamW steps so that B is not zero."""
    torch.manual_seed(seed)
    model = rfprm.load_model(path)
    cfg = LoraConfig(r=r, alpha=2.0 * r, target_modules=targets or LoraConfig().target_modules)
    apply_lora(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 10))
    model.train()
    for _ in range(steps):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), ids


def test_only_adapters_train_and_base_weights_stay(hf_qwen2):
    path, _ = hf_qwen2()
    base = rfprm.load_model(path)
    model, ids = trained_lora_model(path)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    for (n, p), (_, q) in zip(base.named_parameters(), [(n, p) for n, p in model.named_parameters()
                                                          if ".lora_" not in n]):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    assert (model(ids) - base(ids)).abs().max() > 1e-3                  # the adapters do something
    assert set(base.state_dict()) <= set(model.state_dict())           # base names unchanged


def test_decode_step_sees_the_adapters(hf_qwen2):
    from rfprm.generate import generate
    path, _ = hf_qwen2()
    model, ids = trained_lora_model(path)
    prompts = [ids[0, :5].tolist(), ids[1, :3].tolist()]
    fast = generate(model, prompts, max_new_tokens=6, temperature=0.0)
    with torch.no_grad():                                              # greedy by the reference forward
        for prompt, out in zip(prompts, fast):
            seq = list(prompt)
            for _ in range(len(out)):
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
            assert out == seq[len(prompt):]


def test_gradient_checkpointing_gives_the_same_adapter_grads(hf_qwen2):
    path, _ = hf_qwen2()
    model, ids = trained_lora_model(path, steps=1)
    model.train()
    grads = []
    for ckpt in (False, True):
        model.model.gradient_checkpointing = ckpt
        model.zero_grad()
        model(ids).float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], msg=n)


def test_peft_loads_the_adapter_with_equal_logits(hf_qwen2, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import Qwen2ForCausalLM
    path, _ = hf_qwen2(tied=False)
    model, ids = trained_lora_model(path, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj"))
    save_adapter(model, tmp_path / "adapter", base=str(path))
    hf = peft.PeftModel.from_pretrained(Qwen2ForCausalLM.from_pretrained(path), tmp_path / "adapter").eval()
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert (ours - theirs).abs().max() <= 1e-4


def test_merge_writes_base_plus_adapter(hf_qwen2, tmp_path):
    path, _ = hf_qwen2()
    model, ids = trained_lora_model(path)
    save_adapter(model, tmp_path / "adapter")
    merge_checkpoint(path, tmp_path / "adapter", tmp_path / "merged")
    merged, base = rfprm.load_model(tmp_path / "merged"), rfprm.load_model(path)
    q = model.model.layers[1].self_attn.q_proj
    expected = base.model.layers[1].self_attn.q_proj.weight + q.lora_scaling * q.lora_B.weight @ q.lora_A.weight
    torch.testing.assert_close(merged.model.layers[1].self_attn.q_proj.weight, expected)
    with torch.no_grad():
        assert (merged(ids) - model(ids)).abs().max() <= 1e-4
    remove_lora(model, merge=False)                                    # back to the base model
    torch.testing.assert_close(model(ids), base(ids))


def test_loaded_adapter_equals_the_saved_one(hf_qwen2, tmp_path):
    path, _ = hf_qwen2()
    model, ids = trained_lora_model(path)
    save_adapter(model, tmp_path / "adapter")
    again = load_adapter(rfprm.load_model(path), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(again(ids), model(ids))


def test_bad_lora_input_is_one_clear_error(hf_qwen2, tmp_path):
    with pytest.raises(RfprmError, match="rank must be a positive integer"):
        LoraConfig(r=0)
    with pytest.raises(RfprmError, match="do not exist"):
        LoraConfig(r=4, target_modules=("qkv",))
    path, _ = hf_qwen2()
    model, _ = trained_lora_model(path, steps=1)
    save_adapter(model, tmp_path / "adapter")
    other, _ = hf_qwen2(hidden=48)
    with pytest.raises(RfprmError, match="base does not match"):
        load_adapter(rfprm.load_model(other), tmp_path / "adapter")
    proc = subprocess.run([sys.executable, "-m", "rfprm.lora", "merge", "--model", str(other),
                           "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "m")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "base does not match" in proc.stderr and not (tmp_path / "m").exists()


def test_prm_lora_trains_adapters_and_head_and_round_trips(tmp_path):
    prm = rfprm.load_prm("tiny-prm")
    ids = torch.randint(0, prm.cfg.vocab_size, (2, 12))
    with torch.no_grad():
        before = prm.model(ids)
    apply_lora(prm, LoraConfig(r=4, target_modules=("q_proj", "down_proj")), trainable=("score.",))
    trainable = {n for n, p in prm.named_parameters() if p.requires_grad}
    assert any(n.startswith("step_head.") for n in trainable)          # HF's score.* head
    assert all(n.startswith("step_head.") or ".lora_" in n for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(prm.model(ids), before)              # B starts at zero
        for n, p in prm.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
        after = prm.model(ids)
    save_adapter(prm, tmp_path / "adapter", extra=("score.",))
    again = load_adapter(rfprm.load_prm("tiny-prm"), tmp_path / "adapter", trainable=("score.",))
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids), after)
        torch.testing.assert_close(again.state_dict()["step_head.0.weight"], prm.state_dict()["step_head.0.weight"])
