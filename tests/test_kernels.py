"""Every fused op in rfprm.kernels against its plain reference: values, gradients (gradcheck in
float64 and autograd's grads of the reference), several shapes, bf16 against float32, and what the
fused backward actually saves."""
from __future__ import annotations

import pytest
import torch

from rfprm import kernels as K
from rfprm.errors import RfprmError

f64 = torch.float64


def _rand(*shape, dtype=f64, seed=0, grad=True, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_(grad)


def _grads(fn, inputs, seed=123):
    """Value and d(sum(out * r))/d(inputs) for a fixed random r (a generic upstream gradient)."""
    out = fn(*inputs)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=f64).to(out.dtype)
    gs = torch.autograd.grad((out * r).sum(), [t for t in inputs if t.requires_grad])
    return out, gs


def _assert_same(fused, ref, inputs, atol=1e-10, rtol=1e-8):
    out, gs = _grads(fused, inputs)
    out_ref, gs_ref = _grads(ref, inputs)
    assert out.dtype == out_ref.dtype and out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, atol=atol, rtol=rtol)
    for g, g_ref in zip(gs, gs_ref):
        torch.testing.assert_close(g, g_ref, atol=atol, rtol=rtol)


def _saved_bytes(fn, *inputs, alive=()) -> int:
    """Bytes of distinct storages autograd saves for backward while running fn(*inputs), leaving
    out the inputs and the `alive` tensors (they are held anyway)."""
    seen = {t.untyped_storage().data_ptr() for t in (*inputs, *alive)}
    total = 0

    def pack(t):
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return total


# ----------------------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize("shape", [(8,), (5, 8), (2, 3, 16)])
def test_rms_norm_matches_reference_float64(shape):
    x, w = _rand(*shape), _rand(shape[-1], seed=1)
    _assert_same(lambda a, b: K.rms_norm(a, b, 1e-6), lambda a, b: K.rms_norm_ref(a, b, 1e-6), [x, w])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rms_norm_inference_path_matches_reference(dtype):
    x, w = _rand(3, 5, 32, dtype=dtype), _rand(32, dtype=dtype, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(K.rms_norm(x, w, 1e-6), K.rms_norm_ref(x, w, 1e-6),
                                   atol=1e-6 if dtype != torch.bfloat16 else 0, rtol=1e-6 if dtype != torch.bfloat16 else 0)


def test_rms_norm_gradcheck_and_frozen_weight():
    x, w = _rand(2, 3, 6), _rand(6, seed=1)
    assert torch.autograd.gradcheck(lambda a, b: K.rms_norm(a, b, 1e-5), (x, w))
    w.requires_grad_(False)  # LoRA: the norm's weight is frozen, only dx is needed
    _assert_same(lambda a: K.rms_norm(a, w, 1e-5), lambda a: K.rms_norm_ref(a, w, 1e-5), [x])


def test_rms_norm_bf16_close_to_float32_and_saves_less():
    x, w = _rand(4, 7, 64, dtype=torch.bfloat16), _rand(64, dtype=torch.bfloat16, seed=1)
    out, (dx, dw) = _grads(lambda a, b: K.rms_norm(a, b, 1e-6), [x, w])
    x32, w32 = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    out32, (dx32, dw32) = _grads(lambda a, b: K.rms_norm_ref(a, b, 1e-6), [x32, w32])
    assert out.dtype == torch.bfloat16 and dx.dtype == torch.bfloat16 and dw.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), out32, atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(dx.float(), dx32, atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(dw.float(), dw32, atol=0.5, rtol=2e-2)  # sum of 28 rows
    fused = _saved_bytes(lambda a, b: K.rms_norm(a, b, 1e-6), x, w)
    plain = _saved_bytes(lambda a, b: K.rms_norm_ref(a, b, 1e-6), x, w)
    assert fused == 4 * 7 * 4  # one float32 rstd per row, nothing else
    assert plain > 4 * x.numel()  # the float32 copy of x alone is twice x


# ----------------------------------------------------------------------------- SwiGLU
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 6)])
def test_swiglu_matches_reference_float64(shape):
    gate, up = _rand(*shape, scale=3.0), _rand(*shape, seed=1)
    _assert_same(K.swiglu, K.swiglu_ref, [gate, up])
    assert torch.autograd.gradcheck(K.swiglu, (gate, up))


def test_swiglu_bf16_and_saved_tensors():
    gate, up = _rand(6, 32, dtype=torch.bfloat16, scale=3.0), _rand(6, 32, dtype=torch.bfloat16, seed=1)
    out, (dg, du) = _grads(K.swiglu, [gate, up])
    g32, u32 = (t.detach().float().requires_grad_() for t in (gate, up))
    out32, (dg32, du32) = _grads(K.swiglu_ref, [g32, u32])
    for a, b in ((out, out32), (dg, dg32), (du, du32)):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, atol=3e-2, rtol=2e-2)
    assert _saved_bytes(K.swiglu, gate, up) == 0  # only the inputs
    assert _saved_bytes(K.swiglu_ref, gate, up) == gate.numel() * 2  # + silu(gate)


# ----------------------------------------------------------------------------- RoPE
def _rope_tables(B, T, hs, base=10000.0, offset=0):
    """HF-style tables (B, T, hs): both halves hold the same angles."""
    inv_freq = 1.0 / base ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)
    pos = torch.arange(offset, offset + T, dtype=torch.float32)
    ang = torch.outer(pos, inv_freq)
    emb = torch.cat((ang, ang), dim=-1)[None].expand(B, T, hs)
    return emb.cos(), emb.sin()


@pytest.mark.parametrize("B,nh,T,hs", [(1, 1, 1, 2), (2, 3, 5, 8), (1, 2, 7, 16)])
def test_rope_matches_reference_float64(B, nh, T, hs):
    cos, sin = (t.to(f64) for t in _rope_tables(B, T, hs, offset=3))
    x = _rand(B, nh, T, hs)
    _assert_same(lambda a: K.apply_rope(a, cos, sin), lambda a: K.apply_rope_ref(a, cos, sin), [x])
    assert torch.autograd.gradcheck(lambda a: K.apply_rope(a, cos, sin), (x,))


def test_rope_backward_is_inverse_rotation_and_adjoint_for_any_table():
    cos, sin = _rope_tables(2, 5, 8)
    x = _rand(2, 3, 5, 8, dtype=torch.float32)
    dy = torch.randn(2, 3, 5, 8)
    (dx,) = torch.autograd.grad(K.apply_rope(x, cos, sin), x, dy)
    torch.testing.assert_close(dx, K.apply_rope_ref(dy, cos, -sin))  # rotate by -theta
    # arbitrary (non-rotation) tables: the backward is still the exact transpose
    c, s = torch.randn(2, 5, 8, dtype=f64), torch.randn(2, 5, 8, dtype=f64)
    assert torch.autograd.gradcheck(lambda a: K.apply_rope(a, c, s), (_rand(2, 3, 5, 8),))


def test_rope_bf16_casts_tables_like_hf():
    cos, sin = _rope_tables(1, 6, 16, offset=1000)
    x = _rand(1, 2, 6, 16, dtype=torch.bfloat16)
    out = K.apply_rope(x, cos, sin)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, K.apply_rope_ref(x, cos, sin), atol=0, rtol=0)
    (dx,) = torch.autograd.grad(out.float().sum(), x)
    assert dx.dtype == torch.bfloat16
    assert _saved_bytes(lambda a: K.apply_rope(a, cos, sin), x, alive=(cos, sin)) == 0


def test_rotate_half():
    x = torch.arange(4.0)
    assert K.rotate_half(x).tolist() == [-2.0, -3.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- linear -> log-prob
def _lm(N, H, V, dtype=f64, seed=0, lead=()):
    hidden = _rand(*lead, N, H, dtype=dtype, seed=seed)
    weight = _rand(V, H, dtype=dtype, seed=seed + 1, scale=0.5)
    targets = torch.randint(0, V, (*lead, N), generator=torch.Generator().manual_seed(seed + 2))
    return hidden, weight, targets


@pytest.mark.parametrize("chunk", [None, 1, 3, 4, 64])  # 3 and 4 do not divide 10 rows
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_linear_logprobs_matches_reference_float64(chunk, temperature):
    h, w, y = _lm(10, 6, 13)
    _assert_same(lambda a, b: K.linear_logprobs(a, b, y, temperature, chunk),
                 lambda a, b: K.linear_logprobs_ref(a, b, y, temperature), [h, w])


def test_linear_logprobs_leading_dims_and_frozen_weight():
    h, w, y = _lm(5, 4, 9, lead=(2,))
    w.requires_grad_(False)
    out = K.linear_logprobs(h, w, y, chunk_size=3)
    assert out.shape == (2, 5)
    _assert_same(lambda a: K.linear_logprobs(a, w, y, 1.3, 3),
                 lambda a: K.linear_logprobs_ref(a, w, y, 1.3), [h])
    with torch.no_grad():  # the inference path skips the Function
        torch.testing.assert_close(K.linear_logprobs(h, w, y, 1.0, 2), K.linear_logprobs_ref(h, w, y))


def test_linear_logprobs_gradcheck():
    h, w, y = _lm(5, 4, 7)
    assert torch.autograd.gradcheck(lambda a, b: K.linear_logprobs(a, b, y, 0.7, 2), (h, w))


def test_linear_logprobs_bf16_close_to_float32():
    h, w, y = _lm(12, 32, 50, dtype=torch.bfloat16)
    out, (dh, dw) = _grads(lambda a, b: K.linear_logprobs(a, b, y, 0.8, 5), [h, w])
    h32, w32 = (t.detach().float().requires_grad_() for t in (h, w))
    out32, (dh32, dw32) = _grads(lambda a, b: K.linear_logprobs_ref(a, b, y, 0.8), [h32, w32])
    assert out.dtype == torch.float32 and dh.dtype == dw.dtype == torch.bfloat16
    torch.testing.assert_close(out, out32, atol=0.1, rtol=0.03)
    torch.testing.assert_close(dh.float(), dh32, atol=0.05, rtol=0.03)
    torch.testing.assert_close(dw.float(), dw32, atol=0.05, rtol=0.03)


def test_linear_logprobs_never_saves_logits():
    h, w, y = _lm(64, 8, 1000, dtype=torch.float32)
    fused = _saved_bytes(lambda a, b: K.linear_logprobs(a, b, y, 1.0, 16), h, w, alive=(y,))
    plain = _saved_bytes(lambda a, b: K.linear_logprobs_ref(a, b, y), h, w, alive=(y,))
    assert fused <= 64 * 8 * 2  # the flattened targets (int64) and the float32 log-sum-exp
    assert plain >= 64 * 1000 * 4  # the whole log-softmax


def test_linear_logprobs_bad_input():
    h, w, y = _lm(4, 3, 5)
    with pytest.raises(RfprmError, match="outside the vocabulary"):
        K.linear_logprobs(h, w, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(RfprmError, match="targets have shape"):
        K.linear_logprobs(h, w, y[:3])
    with pytest.raises(RfprmError, match="do not fit"):
        K.linear_logprobs(h, w.T, y)
    with pytest.raises(RfprmError, match="temperature"):
        K.linear_logprobs(h, w, y, temperature=0.0)
    with pytest.raises(RfprmError, match="same dtype"):
        K.linear_logprobs(h.float(), w, y)


# ----------------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [None, 3])
def test_linear_cross_entropy_matches_reference_float64(reduction, chunk):
    h, w, y = _lm(7, 5, 11, lead=(2,))
    y[0, 1] = y[1, 4] = y[1, 6] = -100  # ignored rows
    _assert_same(lambda a, b: K.linear_cross_entropy(a, b, y, reduction=reduction, temperature=0.6,
                                                     chunk_size=chunk),
                 lambda a, b: K.linear_cross_entropy_ref(a, b, y, reduction=reduction, temperature=0.6),
                 [h, w])


def test_linear_cross_entropy_ignored_rows_get_no_gradient_and_custom_index():
    h, w, y = _lm(6, 4, 9)
    y[[1, 4]] = 7
    loss = K.linear_cross_entropy(h, w, y, ignore_index=7, chunk_size=4)
    (dh,) = torch.autograd.grad(loss, h)
    assert dh[[1, 4]].abs().sum() == 0 and dh[[0, 2, 3, 5]].abs().sum() > 0
    assert torch.autograd.gradcheck(
        lambda a, b: K.linear_cross_entropy(a, b, y, ignore_index=7, temperature=1.5, chunk_size=4), (h, w))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_all_ignored_is_zero(reduction):
    h, w, _ = _lm(5, 4, 6)
    y = torch.full((5,), -100)
    for fn in (K.linear_cross_entropy, K.linear_cross_entropy_ref):
        loss = fn(h, w, y, reduction=reduction)
        assert torch.isfinite(loss).all() and (loss == 0).all()
        dh, dw = torch.autograd.grad(loss.sum(), (h, w))
        assert (dh == 0).all() and (dw == 0).all()


def test_linear_cross_entropy_bf16_close_to_float32():
    h, w, y = _lm(16, 32, 40, dtype=torch.bfloat16)
    y[:4] = -100
    loss = K.linear_cross_entropy(h, w, y, chunk_size=5)
    (dw,) = torch.autograd.grad(loss, w)
    h32, w32 = (t.detach().float().requires_grad_() for t in (h, w))
    loss32 = K.linear_cross_entropy_ref(h32, w32, y)
    (dw32,) = torch.autograd.grad(loss32, w32)
    torch.testing.assert_close(loss, loss32, atol=0.05, rtol=0.02)
    torch.testing.assert_close(dw.float(), dw32, atol=0.01, rtol=0.05)


def test_linear_cross_entropy_bad_reduction():
    h, w, y = _lm(3, 2, 4)
    with pytest.raises(RfprmError, match="reduction"):
        K.linear_cross_entropy(h, w, y, reduction="avg")


# ----------------------------------------------------------------------------- the bench script
def test_bench_script_runs_tiny(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_logprobs_memory.py"
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(script), "--rows", "16", "--hidden", "8",
                          "--vocab", "300", "--json", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    table = json.loads(out.read_text())
    assert table["fused"]["peak_mb"] > 0 and table["max_abs_diff"]["logprobs"] < 1e-4
    bad = subprocess.run([sys.executable, str(script), "--rows", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
