"""Shared fixtures: tiny random Qwen2 checkpoints written by transformers (the reference)."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_lm(seed=0):
    """A 2-layer rfprm model with random weights (vocab 64, hidden 32), for training-loop tests."""
    from rfprm.config import preset
    from rfprm.model import Qwen2ForCausalLM, init_weights
    torch.manual_seed(seed)
    m = Qwen2ForCausalLM(preset("tiny", vocab_size=64, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    init_weights(m)
    return m

def make_hf_qwen2(out: Path, *, tied=True, heads=4, kv_heads=2, dtype=torch.float32,
                  max_shard_size=None, vocab=96, hidden=32, layers=2, seed=0):
    """Save a random transformers Qwen2ForCausalLM to `out`; return the HF model (float32)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden + 8,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, max_position_embeddings=128,
                      rope_theta=10000.0, tie_word_embeddings=tied)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises biases to zero; make them count in the comparison
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    return model.float()


@pytest.fixture
def hf_qwen2(tmp_path):
    def make(**kw):
        out = tmp_path / f"hf_{len(list(tmp_path.iterdir()))}"
        return out, make_hf_qwen2(out, **kw)
    return make


@pytest.fixture(scope="session")
def quick_policy(tmp_path_factory):
    """A miniature tiny-policy (a few SFT steps on the world's tokenizer): shapes and formats of
    the shipped one, numbers meaningless. Built once per test session."""
    from rfprm.recipes import build_tiny_base, build_tiny_policy
    root = tmp_path_factory.mktemp("quick_ckpts")
    base, _ = build_tiny_base(out=root / "base", quick=True)
    policy, _ = build_tiny_policy(base=base, out=root / "policy", quick=True)
    return policy
