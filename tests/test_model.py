"""rfprm's Qwen2 against transformers' Qwen2ForCausalLM on tiny random checkpoints."""
import json

import pytest
import torch

import rfprm
from rfprm.config import ModelConfig
from rfprm.errors import RfprmError


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("tied,heads,kv,dtype,shard", [
    (True, 4, 2, torch.float32, None),        # tied, GQA, single file
    (False, 4, 4, torch.float32, None),       # untied, MHA
    (False, 4, 1, torch.float32, "20KB"),     # sharded, multi-query
    (True, 4, 2, torch.bfloat16, None),       # bf16 file, loaded as float32 on CPU
    (False, 2, 2, torch.bfloat16, "20KB"),    # bf16, sharded, untied
])
def test_logits_match_transformers(hf_qwen2, tied, heads, kv, dtype, shard):
    path, hf = hf_qwen2(tied=tied, heads=heads, kv_heads=kv, dtype=dtype, max_shard_size=shard)
    if shard:
        assert (path / "model.safetensors.index.json").exists()
    model = rfprm.load_model(path)
    assert model.dtype == torch.float32
    ids = torch.randint(0, 96, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref = model(ids), hf(ids).logits
    assert ours.shape == (3, 17, 96)
    assert rel_err(ours, ref) <= 1e-4


def test_bf16_model_matches_transformers_in_bf16(hf_qwen2):
    path, _ = hf_qwen2(dtype=torch.bfloat16)
    from transformers import Qwen2ForCausalLM
    hf = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    model = rfprm.load_model(path, dtype="bfloat16")
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, ref = model(ids).float(), hf(ids).logits.float()
    assert rel_err(ours, ref) <= 2e-2  # bf16 rounding; the float32 test is the strict one


def test_saved_by_rfprm_loads_in_transformers(hf_qwen2, tmp_path):
    from transformers import Qwen2ForCausalLM
    for tied in (True, False):
        path, _ = hf_qwen2(tied=tied)
        model = rfprm.load_model(path)
        out = rfprm.save_model(model, tmp_path / f"saved_{tied}")
        hf = Qwen2ForCausalLM.from_pretrained(out).eval()
        ids = torch.randint(0, 96, (2, 11))
        with torch.no_grad():
            assert rel_err(model(ids), hf(ids).logits) <= 1e-4
        again = rfprm.load_model(out)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_rfprm_sharded_save_roundtrip(hf_qwen2, tmp_path):
    path, hf = hf_qwen2(tied=False)
    model = rfprm.load_model(path)
    out = rfprm.save_model(model, tmp_path / "sharded", max_shard_bytes=16_000)
    assert (out / "model.safetensors.index.json").exists()
    ids = torch.randint(0, 96, (1, 8))
    with torch.no_grad():
        assert rel_err(rfprm.load_model(out)(ids), hf(ids).logits) <= 1e-4


def test_sdpa_matches_reference_attention_with_padding(hf_qwen2):
    path, _ = hf_qwen2()
    model = rfprm.load_model(path)
    ids = torch.randint(0, 96, (2, 12))
    key_mask = torch.ones(2, 12, dtype=torch.bool)
    key_mask[1, :5] = False  # row 1 is left-padded
    with torch.no_grad():
        fast = model(ids, key_mask=key_mask)
        model.set_attention("ref")
        slow = model(ids, key_mask=key_mask)
        plain_ref = model(ids)
        model.set_attention("sdpa")
        plain = model(ids)
    assert rel_err(fast[:, ], slow) <= 1e-5
    assert rel_err(plain, plain_ref) <= 1e-5
    # the padded row equals the same tokens run alone
    with torch.no_grad():
        alone = model(ids[1:, 5:])
    assert rel_err(fast[1, 5:], alone[0]) <= 1e-4


def test_kv_cache_matches_full_forward(hf_qwen2):
    path, _ = hf_qwen2()
    model = rfprm.load_model(path)
    ids = torch.randint(0, 96, (2, 10))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2, 16)
        parts = [model(ids[:, :6], cache=cache)]
        for t in range(6, 10):
            parts.append(model(ids[:, t:t + 1], cache=cache))
    assert cache.length == 10
    assert rel_err(torch.cat(parts, 1), full) <= 1e-5


def test_config_spellings_and_refusals(tmp_path):
    base = dict(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    old = ModelConfig.from_hf_dict({**base, "rope_theta": 5e5, "torch_dtype": "bfloat16"})
    new = ModelConfig.from_hf_dict({**base, "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"},
                                    "dtype": "bfloat16"})
    assert old == new and old.rope_theta == 5e5 and old.torch_dtype == "bfloat16"
    assert not old.tie_word_embeddings  # transformers' Qwen2 default
    with pytest.raises(RfprmError, match="RoPE scaling"):
        ModelConfig.from_hf_dict({**base, "rope_scaling": {"type": "yarn", "factor": 4.0}})
    with pytest.raises(RfprmError, match="sliding"):
        ModelConfig.from_hf_dict({**base, "use_sliding_window": True})
    with pytest.raises(RfprmError, match="model_type"):
        ModelConfig.from_hf_dict({**base, "model_type": "llama"})
    with pytest.raises(RfprmError, match="missing field 'hidden_size'"):
        ModelConfig.from_hf_dict({k: v for k, v in base.items() if k != "hidden_size"})
    assert rfprm.preset("qwen2.5-7b").num_key_value_heads == 4


def test_bad_checkpoints_raise_one_clear_error(hf_qwen2, tmp_path):
    with pytest.raises(RfprmError, match="no such directory"):
        rfprm.load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RfprmError, match="no config.json"):
        rfprm.load_model(tmp_path / "empty")
    path, _ = hf_qwen2()
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    with pytest.raises(RfprmError, match="truncated"):
        rfprm.load_model(path)
    f.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(RfprmError, match="corrupt"):
        rfprm.load_model(path)
    shard_path, _ = hf_qwen2(max_shard_size="20KB")
    index = json.loads((shard_path / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (shard_path / victim).unlink()
    with pytest.raises(RfprmError, match=f"names shard {victim}, which is missing"):
        rfprm.load_model(shard_path)
    # config disagreeing with the weights: the tensor and file are named
    path2, _ = hf_qwen2()
    cfg = json.loads((path2 / "config.json").read_text())
    cfg["vocab_size"] = 100
    (path2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RfprmError, match=r"model.safetensors: tensor model.embed_tokens.weight has shape \(96, 32\), expected \(100, 32\)"):
        rfprm.load_model(path2)


def test_tokenizer_larger_than_embedding_is_refused(hf_qwen2):
    from rfprm.recipes import build_tokenizer
    path, _ = hf_qwen2(vocab=96)
    build_tokenizer().save(path)          # ~320 ids for an embedding of 96 rows
    with pytest.raises(RfprmError, match="does not match the embedding size"):
        rfprm.load_model(path)


def test_vocab_limit_comes_from_the_tokenizer(hf_qwen2):
    from rfprm.recipes import build_tokenizer
    tok = build_tokenizer()
    path, _ = hf_qwen2(vocab=(tok.vocab_size // 64 + 1) * 64)     # always some padded rows
    tok.save(path)
    model = rfprm.load_model(path)
    assert model.vocab_limit == tok.vocab_size < model.cfg.vocab_size


def test_decode_kernels_match_their_references():
    from rfprm.kernels import apply_rope_ref, l2_normalize_rows, rms_norm_ref, rope_matrix
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g)                      # (B, heads, hs)
    cos, sin = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    ref = apply_rope_ref(x[:, :, None], cos[:, None], sin[:, None])[:, :, 0]
    torch.testing.assert_close(x @ rope_matrix(cos, sin, x.dtype), ref)
    rows, w = torch.randn(4, 32, generator=g) * 3, torch.randn(32, generator=g)
    rows[0] *= 1e-4                                              # where eps matters
    floor = torch.tensor((32 * 1e-6) ** 0.5)                     # sqrt(D * eps)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        r, ww = rows.to(dtype), w.to(dtype)
        torch.testing.assert_close(ww * (l2_normalize_rows(r, floor) * 32 ** 0.5).to(dtype),
                                   rms_norm_ref(r, ww, 1e-6))


def decode_vs_forward(model, batch, padded, steps=4, seed=0):
    """Largest relative error between decode_logits and the cached forward (its reference)
    over a few steps after a prefill of 6 tokens, left-padded rows when `padded`."""
    g = torch.Generator().manual_seed(seed)
    V, T = model.cfg.vocab_size, 6
    ids = torch.randint(0, V, (batch, T), generator=g)
    lengths = torch.full((batch,), T)
    if padded:
        lengths[::2] = torch.randint(1, T, ((batch + 1) // 2,), generator=g)
    key_mask = torch.arange(T + steps)[None, :] >= (T - lengths)[:, None]  # (B, T+steps)
    errs = []
    with torch.no_grad():
        caches = [model.new_cache(batch, T + steps), model.new_cache(batch, T + steps)]
        for c in caches:
            model(ids, key_mask=key_mask[:, :T], cache=c, last_only=True)
        model.model.rope.ensure(T + steps, "cpu")
        weights = model.model.decode_weights()
        for step in range(steps):
            tokens = torch.randint(0, V, (batch,), generator=g)
            S = T + step + 1
            ref = model(tokens[:, None], positions=(lengths + step)[:, None], key_mask=key_mask[:, :S],
                        cache=caches[0])[:, -1]
            rotation = model.model.rope.rotation(lengths + step, model.dtype)
            fast = model.decode_logits(tokens, rotation, key_mask[:, None, None, :S], caches[1],
                                       weights=weights)
            errs.append(rel_err(fast.float(), ref.float()))
    assert caches[1].length == caches[0].length == T + steps
    return max(errs)


@pytest.mark.parametrize("batch,padded,weight_first", [
    (1, False, False),      # one row: the fused matrices laid out (in, out)
    (3, True, False),       # ragged rows, (out, in) layout
    (9, True, True),        # the w^T @ x^T form big models use for 8+ rows
])
def test_decode_step_matches_cached_forward(hf_qwen2, monkeypatch, batch, padded, weight_first):
    path, _ = hf_qwen2(seed=batch)
    model = rfprm.load_model(path)
    monkeypatch.setattr(model.model, "weight_first", lambda b: weight_first)
    assert decode_vs_forward(model, batch, padded) <= 1e-5


def test_decode_step_matches_cached_forward_bf16(hf_qwen2):
    path, _ = hf_qwen2(dtype=torch.bfloat16)
    model = rfprm.load_model(path, dtype="bfloat16")
    assert decode_vs_forward(model, 3, padded=True) <= 3e-2  # bf16 rounding in a different order


def test_fused_decode_weights_follow_the_parameters(hf_qwen2):
    path, _ = hf_qwen2()
    model = rfprm.load_model(path)
    first = model.model.decode_weights()
    assert model.model.decode_weights() is first                       # cached
    with torch.no_grad():                                              # as an optimizer step does
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
        model.model.layers[1].input_layernorm.weight.add_(0.3)
        model.model.norm.weight.mul_(0.7)
    assert model.model.decode_weights() is not first
    assert decode_vs_forward(model, 1, padded=False) <= 1e-5
    state = {k: v * 0.9 for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)                          # replaced parameters
    assert decode_vs_forward(model, 2, padded=False) <= 1e-5           # re-fused lazily
    model.train()
    assert model.model._decode is None
    assert set(model.state_dict()) == set(state)                       # no fused names leak out


def unique_bytes(module) -> int:
    """Bytes of the distinct storages behind a module's parameters and buffers."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in [*module.parameters(), *module.buffers()]}
    return sum(storages.values())


def test_each_weight_is_held_once_after_load(tmp_path):
    """Qwen2.5-0.5B's layer widths (2 of its 24 layers, a small vocabulary), bf16: the loaded
    model's distinct storages add up to the checkpoint's tensor bytes (limit 1.02x), and q/k/v
    and gate/up are views into one buffer each."""
    from rfprm.checkpoint import iter_checkpoint
    from rfprm.config import PRESETS
    from rfprm.decode import fused_weight
    cfg = rfprm.ModelConfig(**{**PRESETS["qwen2.5-0.5b"], "num_hidden_layers": 2, "vocab_size": 1024})
    torch.manual_seed(0)
    model = rfprm.Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    rfprm.save_model(model, tmp_path / "ckpt")
    file_bytes = sum(t.numel() * t.element_size() for _, _, t in iter_checkpoint(tmp_path / "ckpt"))
    loaded = rfprm.load_model(tmp_path / "ckpt", dtype="bfloat16")
    assert unique_bytes(loaded) <= 1.02 * file_bytes
    for layer in loaded.model.layers:
        a, m = layer.self_attn, layer.mlp
        assert fused_weight((a.q_proj, a.k_proj, a.v_proj)) is not None
        assert fused_weight((m.gate_proj, m.up_proj)) is not None
    loaded.model.decode_weights()
    assert unique_bytes(loaded) <= 1.02 * file_bytes                   # decoding adds no copies


def test_optimizer_steps_and_dtype_changes_keep_decode_right(hf_qwen2):
    path, _ = hf_qwen2()
    model = rfprm.load_model(path)
    q = model.model.layers[0].self_attn.q_proj.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(torch.arange(8)[None]).float().pow(2).mean().backward()
    opt.step()
    model.eval()
    assert model.model.layers[0].self_attn.q_proj.weight is q          # same Parameter object
    assert decode_vs_forward(model, 1, padded=False) <= 1e-5           # the update is seen
    model.to(torch.float64).to(torch.float32)                          # new storages per weight
    assert decode_vs_forward(model, 3, padded=True) <= 1e-5


def test_compile_cache_is_kept_per_cpu_kernel_set(monkeypatch):
    """torch.compile's disk cache gets one folder per ATen CPU capability (a kernel built for
    AVX-512 and reused under an AVX2 pin stops the process), unless the user chose a folder."""
    import os
    import re
    import tempfile
    from rfprm.model import compile_cache_dir
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    env = {}
    path = compile_cache_dir(env)
    assert env == {"TORCHINDUCTOR_CACHE_DIR": path} and path.endswith("_avx2")
    assert os.path.dirname(path) == tempfile.gettempdir()
    default = path[:-len("_avx2")]
    for inherited in (default, default + "_avx512"):   # inductor's default, or another kernel set's
        assert compile_cache_dir({"TORCHINDUCTOR_CACHE_DIR": inherited}) == path
    for mine in ("/data/cache", default + "_mine"):
        env = {"TORCHINDUCTOR_CACHE_DIR": mine}
        assert compile_cache_dir(env) == mine and env == {"TORCHINDUCTOR_CACHE_DIR": mine}
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert re.search(r"_avx512$", compile_cache_dir({}))
