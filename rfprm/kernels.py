"""Fused ops in plain PyTorch (no Triton), each beside the reference expression it replaces.

The model imports `rms_norm`, `swiglu`, `apply_rope` and `rotate_half` from here (and, for its
one-token decode step, `l2_normalize_rows` and `rope_matrix`); the PRM, SFT and RL losses use
`linear_logprobs` and `linear_cross_entropy`. Every fused op has a `*_ref` twin written the
obvious way, and tests/test_kernels.py checks that the two agree in values and gradients.
Notable choices:

- "Fused" here means a `torch.autograd.Function` with a hand-written backward that saves fewer
  tensors than autograd would, or never builds a large intermediate at all. The forward math is
  the same PyTorch ops as the reference, so results match it to rounding.
- Low precision is widened to float32 for reductions (RMSNorm statistics, softmax) and for
  backward arithmetic, like HF does; float64 stays float64 (we widen, never narrow), which is
  what lets `gradcheck` run on these functions.
- When no gradient is needed (inference, generation) the ops skip `autograd.Function` and run
  the plain forward: nothing to save, and less Python overhead per call.
- The decode step runs each op on a handful of rows, where the cost is the per-op dispatch, not
  the arithmetic: `l2_normalize_rows` is RMSNorm up to a factor folded into the next matmul, in
  3 ops (F.rms_norm takes ~6 internally on the CPU), and `rope_matrix` turns RoPE into one
  batched matmul per layer (x @ R, with R = diag(cos) + P diag(sin) for the rotate-half
  permutation P) instead of ~7 elementwise ops. Both are inference-only and are compared with
  their references in tests/test_model.py.
- The big one is `linear_logprobs`: at Qwen's vocabulary of 151,936 the [N, V] float32 logits of
  a 2048-token batch take 1.2 GB, and autograd keeps several such tensors alive (logits,
  log-softmax output, its gradient). That, not the model, dominates RL/SFT memory. We walk over
  row chunks, keep only a float32 log-sum-exp per row, and recompute each chunk's logits in
  backward. Peak extra memory is a few chunk-sized buffers plus grad_weight itself. The matmul
  runs in the input dtype (as the reference's does), the softmax in float32, and a bf16 weight's
  gradient is summed over chunks in float32 before the final cast.
- Cross-entropy is -log-prob over the non-ignored rows, so there is one chunked kernel, not two.
  Ignored rows are dropped before the matmul (prompt tokens in SFT cost nothing). With
  reduction="mean" and every row ignored the loss is 0 (not NaN), and the plain reference
  `linear_cross_entropy_ref` follows the same convention.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from rfprm.errors import RfprmError

# A chunk of rows is sized so that its logits hold about 2^24 elements (64 MB in float32): 110 rows
# at Qwen's vocabulary of 151,936, the whole batch at once for the built-in world's tiny vocabulary.
# Every chunk streams the whole [V, H] weight (and, in backward, the [V, H] grad accumulator) through
# memory, so much smaller chunks turn the op memory-bound (55 rows ran the CPU backward about 2x
# slower); much larger ones bring back the memory we are avoiding (the 2-3 chunk-sized temporaries
# should stay well under the [N, V] logits of a real batch and under the weight itself).
DEFAULT_CHUNK_ELEMENTS = 2**24


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype arithmetic is done in: float32 for half/bfloat16/float32, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ----------------------------------------------------------------------------- RMSNorm
def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF Qwen2RMSNorm: normalise in float32, cast back to x's dtype, then scale by weight."""
    dtype = x.dtype
    xf = x.to(_opmath(dtype))
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


class _RMSNorm(torch.autograd.Function):
    """Saves x and one float32 rstd per row; autograd would keep the float32 copy of x, the
    normalised x and rstd. Backward: dx = rstd * (dn - n * mean(dn * n)) with dn = dy * weight."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.to(_opmath(x.dtype))
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        op = _opmath(x.dtype)
        n = x.to(op) * rstd  # the normalised x, recomputed
        dx = dweight = None
        if ctx.needs_input_grad[0]:
            dn = dy.to(op) * weight.to(op)
            dx = (rstd * (dn - n * (dn * n).mean(-1, keepdim=True))).to(x.dtype)
        if ctx.needs_input_grad[1]:
            # the forward multiplied weight by n *after* the cast to x.dtype; use the same value
            nc = n.to(x.dtype).to(op)
            dweight = (dy.to(op) * nc).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        return dx, dweight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., D), weight (D,) -> (..., D) with HF Qwen2RMSNorm semantics."""
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise RfprmError(f"rms_norm: weight has shape {tuple(weight.shape)}, "
                         f"expected ({x.shape[-1]},) to match x's last dimension")
    if not _needs_grad(x, weight):
        if x.dtype == weight.dtype and x.dtype in (torch.float32, torch.float64):
            # no casts to respect at full precision: torch's one-kernel rms_norm is the same math
            # with a fraction of the dispatches (this is the decode hot path: 2 per layer)
            return F.rms_norm(x, (x.shape[-1],), weight, eps)
        return rms_norm_ref(x, weight, eps)
    return _RMSNorm.apply(x, weight, eps)


# ----------------------------------------------------------------------------- SwiGLU
def swiglu_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


class _SwiGLU(torch.autograd.Function):
    """Saves gate and up only; autograd would also keep silu(gate), a third tensor of the MLP's
    widest size (intermediate_size, 5-6x hidden). Backward recomputes sigmoid(gate):
    d silu(g)/dg = s * (1 + g * (1 - s)) with s = sigmoid(g)."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved_tensors
        op = _opmath(gate.dtype)
        g, dy = gate.to(op), dy.to(op)
        s = torch.sigmoid(g)
        dgate = dup = None
        if ctx.needs_input_grad[1]:
            dup = (dy * g * s).to(up.dtype)
        if ctx.needs_input_grad[0]:
            dgate = (dy * up.to(op) * s * (1 + g * (1 - s))).to(gate.dtype)
        return dgate, dup


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, any (equal) shapes."""
    if gate.shape != up.shape:
        raise RfprmError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must match")
    if not _needs_grad(gate, up):
        return swiglu_ref(gate, up)
    return _SwiGLU.apply(gate, up)


# ----------------------------------------------------------------------------- RoPE
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dimension (HF's rotate-half convention, not interleaved)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _unrotate_half(x: torch.Tensor) -> torch.Tensor:
    """The transpose (and inverse) of rotate_half: [a, b] -> [b, -a]."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((b, -a), dim=-1)


def apply_rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hs); cos, sin (B, T, hs) float32 tables, cast to x's dtype as HF does."""
    cos = cos.unsqueeze(1).to(x.dtype)
    sin = sin.unsqueeze(1).to(x.dtype)
    return x * cos + rotate_half(x) * sin


class _RoPE(torch.autograd.Function):
    """y = x*cos + R(x)*sin is linear in x, so dx = dy*cos + R^T(dy*sin). With the standard
    tables (both halves of cos and of sin equal) that is the rotation by -theta. Nothing is saved
    but the tables, which the model computes once per forward and shares across all layers."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return apply_rope_ref(x, cos, sin)

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        cos = cos.unsqueeze(1).to(dy.dtype)  # (B, 1, T, hs)
        sin = sin.unsqueeze(1).to(dy.dtype)
        return dy * cos + _unrotate_half(dy * sin), None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: x (B, nh, T, hs), cos/sin (B, T, hs) -> (B, nh, T, hs) in x's dtype."""
    if x.dim() != 4 or cos.dim() != 3 or cos.shape != sin.shape or cos.shape[-1] != x.shape[-1]:
        raise RfprmError(f"apply_rope: expected x (B, nh, T, hs) and cos/sin (B, T, hs), got x "
                         f"{tuple(x.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}")
    if cos.requires_grad or sin.requires_grad:
        return apply_rope_ref(x, cos, sin)  # learned tables: rare, let autograd handle it
    if not _needs_grad(x):
        return apply_rope_ref(x, cos, sin)
    return _RoPE.apply(x, cos, sin)


def rope_matrix(cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """cos, sin (..., hs) float32 -> R (..., hs, hs) in `dtype` such that x @ R equals
    apply_rope_ref(x) for the x rows at that position: R = diag(cos) + P diag(sin), where
    x @ P == rotate_half(x). Each output mixes exactly two inputs (the other products are exact
    zeros), so this is the reference up to the order of one addition. In decode one R serves
    every layer's q and k heads."""
    if cos.dtype != dtype:  # cast first, as HF does
        cos, sin = cos.to(dtype), sin.to(dtype)
    perm = _rotate_half_matrix(cos.shape[-1], dtype, cos.device)
    return torch.addcmul(torch.diag_embed(cos), perm, sin.unsqueeze(-2))  # (..., hs, hs)


@functools.lru_cache(maxsize=8)
def _rotate_half_matrix(hs: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """P (hs, hs) with x @ P == rotate_half(x); a normal tensor even when first asked for under
    inference_mode, so that it can be used outside it too."""
    half = hs // 2
    with torch.inference_mode(False):
        perm = torch.zeros(hs, hs, dtype=dtype, device=device)
        idx = torch.arange(half, device=device)
        perm[idx + half, idx] = -1                              # out[j] = -x[j + h] for j < h
        perm[idx, idx + half] = 1                               # out[j + h] = x[j]
    return perm


def l2_normalize_rows(x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """x / sqrt(||x||^2 + floor^2) over the last dimension, without autograd, for the decode step.
    RMSNorm is sqrt(D) times this with floor = sqrt(D * eps), since mean(x^2) + eps equals
    (||x||^2 + D * eps) / D; the decode step folds sqrt(D) and the norm's weight into the matrix
    that follows. Three ops (vector_norm, hypot, div), where rms_norm_ref takes six. floor is a
    0-dim float32 tensor, made once: wrapping a Python float costs as much as an op. Computed in
    float32 for low-precision x, then cast back, as rms_norm_ref does."""
    wide = x.dtype in (torch.float32, torch.float64)  # skip the no-op casts: ~1 us each
    xf = x if wide else x.to(_opmath(x.dtype))
    y = xf / torch.hypot(torch.linalg.vector_norm(xf, dim=-1, keepdim=True), floor)
    return y if wide else y.to(x.dtype)


# ----------------------------------------------------------------------------- linear -> log-prob
def linear_logprobs_ref(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """The plain expression: materialise all logits, log-softmax in float32, pick the targets."""
    logits = hidden @ weight.T  # (..., V)
    logp = F.log_softmax(logits.to(_opmath(logits.dtype)) / temperature, dim=-1)
    return logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so that one chunk's logits hold about DEFAULT_CHUNK_ELEMENTS elements."""
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(1, vocab_size))


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, H) @ (V, H)^T -> (n, V) logits in opmath dtype, divided by the temperature in place."""
    logits = h @ weight.T  # matmul in the input dtype (bf16 on GPU), like the reference
    logits = logits.to(_opmath(logits.dtype))
    if temperature != 1.0:
        logits.div_(temperature)
    return logits


def _logprobs_forward(hidden, weight, targets, temperature, chunk_rows):
    """hidden (N, H), targets (N,) -> (log-probs (N,), log-sum-exp (N,)), both in opmath dtype."""
    n_rows = hidden.shape[0]
    op = _opmath(hidden.dtype)
    logprobs = hidden.new_empty(n_rows, dtype=op)
    lse = hidden.new_empty(n_rows, dtype=op)
    for s in range(0, n_rows, chunk_rows):
        e = min(s + chunk_rows, n_rows)
        logits = _chunk_logits(hidden[s:e], weight, temperature)  # (n, V)
        lse[s:e] = torch.logsumexp(logits, dim=-1)
        logprobs[s:e] = logits.gather(1, targets[s:e, None]).squeeze(1) - lse[s:e]
    return logprobs, lse


class _LinearLogprobs(torch.autograd.Function):
    """Saves hidden, weight, targets and the per-row log-sum-exp; recomputes logits per chunk.

    With z = h W^T / t and logprob = z[y] - lse(z): d logprob / dz = onehot(y) - softmax(z), so
    dz = g * (onehot - p), d(hW^T) = dz / t, dh = d(hW^T) @ W and dW += d(hW^T)^T @ h.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_rows):
        logprobs, lse = _logprobs_forward(hidden, weight, targets, temperature, chunk_rows)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return logprobs

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, targets, lse = ctx.saved_tensors
        t, chunk_rows = ctx.temperature, ctx.chunk_rows
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_h else None
        # One [V, H] accumulator, float32 for bf16/fp16 weights when there are several chunks:
        # summing dozens of chunk products in 8 mantissa bits would lose the small ones. Feeding
        # it a float32 GEMM (dz is float32 already, h's chunk is small) avoids a [V, H] temporary.
        single = hidden.shape[0] <= chunk_rows
        acc_dtype = weight.dtype if single else _opmath(weight.dtype)
        grad_weight = torch.zeros_like(weight, dtype=acc_dtype) if want_w else None
        grad = grad.to(lse.dtype) / t  # fold 1/t into the per-row scale once
        for s in range(0, hidden.shape[0], chunk_rows):
            e = min(s + chunk_rows, hidden.shape[0])
            h, g = hidden[s:e], grad[s:e, None]  # (n, H), (n, 1)
            dz32 = _chunk_logits(h, weight, t)
            dz32.sub_(lse[s:e, None]).exp_().mul_(-g)  # -g * softmax, in the logits' buffer
            dz32.scatter_add_(1, targets[s:e, None], g)  # + g * onehot(target)
            dz = dz32.to(hidden.dtype)  # (n, V) in the matmul dtype (a no-op for float32)
            if want_h:
                grad_hidden[s:e] = dz @ weight
            if want_w and acc_dtype == dz32.dtype:
                grad_weight.addmm_(dz32.T, h.to(dz32.dtype))
            elif want_w:  # one bf16/fp16 chunk: a single product, rounded once like the reference
                grad_weight.addmm_(dz.T, h)
        if want_w:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def _check_linear_args(hidden, weight, targets, temperature, chunk_size, where):
    if weight.dim() != 2 or hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise RfprmError(f"{where}: hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} "
                         "do not fit; expected hidden (..., H) and weight (V, H)")
    if hidden.dtype != weight.dtype:
        raise RfprmError(f"{where}: hidden is {hidden.dtype} but weight is {weight.dtype}; "
                         "expected the same dtype")
    if targets.shape != hidden.shape[:-1]:
        raise RfprmError(f"{where}: targets have shape {tuple(targets.shape)}, expected "
                         f"{tuple(hidden.shape[:-1])} (hidden's leading dimensions)")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise RfprmError(f"{where}: targets must be integer token ids, got {targets.dtype}")
    if not temperature > 0:
        raise RfprmError(f"{where}: temperature must be > 0, got {temperature}")
    if chunk_size is not None and chunk_size < 1:
        raise RfprmError(f"{where}: chunk_size must be a positive number of rows, got {chunk_size}")


def _check_target_range(targets: torch.Tensor, vocab_size: int, where: str) -> None:
    bad = (targets < 0) | (targets >= vocab_size)
    if targets.numel() and bool(bad.any()):  # one host sync: cheaper than a device-side assert
        i = int(bad.nonzero()[0, 0])
        raise RfprmError(f"{where}: target {int(targets[i])} at row {i} is outside the "
                         f"vocabulary [0, {vocab_size})")


def linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                    temperature: float = 1.0, chunk_size: int | None = None) -> torch.Tensor:
    """log_softmax(hidden @ weight.T / temperature)[targets] without the full logits.

    hidden (..., H), weight (V, H) (the lm_head), targets (...) token ids -> (...) log-probs in
    float32 (float64 for float64 inputs). chunk_size is rows per chunk; None picks
    default_chunk_rows(V). The weight's gradient is computed only if it requires grad.
    """
    _check_linear_args(hidden, weight, targets, temperature, chunk_size, "linear_logprobs")
    _check_target_range(targets, weight.shape[0], "linear_logprobs")
    out_shape = targets.shape
    hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    targets = targets.reshape(-1).long()  # (N,)
    chunk_rows = chunk_size or default_chunk_rows(weight.shape[0])
    if _needs_grad(hidden, weight):
        logprobs = _LinearLogprobs.apply(hidden, weight, targets, float(temperature), chunk_rows)
    else:
        logprobs = _logprobs_forward(hidden, weight, targets, float(temperature), chunk_rows)[0]
    return logprobs.reshape(out_shape)


# ----------------------------------------------------------------------------- cross-entropy
_REDUCTIONS = ("mean", "sum", "none")


def linear_cross_entropy_ref(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             ignore_index: int = -100, reduction: str = "mean",
                             temperature: float = 1.0) -> torch.Tensor:
    """The plain expression; "mean" over no rows is 0 (F.cross_entropy would give NaN)."""
    logits = (hidden @ weight.T).reshape(-1, weight.shape[0])  # (N, V)
    logits = logits.to(_opmath(logits.dtype)) / temperature
    flat = targets.reshape(-1).long()
    if reduction == "none":
        return F.cross_entropy(logits, flat, ignore_index=ignore_index,
                               reduction="none").reshape(targets.shape)
    total = F.cross_entropy(logits, flat, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    return total / (flat != ignore_index).sum().clamp(min=1)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100, reduction: str = "mean",
                         temperature: float = 1.0, chunk_size: int | None = None) -> torch.Tensor:
    """Cross-entropy of hidden @ weight.T / temperature against targets, chunked like
    linear_logprobs. hidden (..., H), targets (...). Rows whose target is ignore_index contribute
    nothing; "mean" divides by the number of other rows (0 if there are none), "sum" adds, "none"
    returns (...) with 0 at ignored rows. Float32 (float64 for float64 inputs)."""
    if reduction not in _REDUCTIONS:
        raise RfprmError(f"linear_cross_entropy: reduction must be one of {_REDUCTIONS}, "
                         f"got {reduction!r}")
    _check_linear_args(hidden, weight, targets, temperature, chunk_size, "linear_cross_entropy")
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    flat = targets.reshape(-1).long()  # (N,)
    keep = (flat != ignore_index).nonzero().squeeze(1)  # (M,) rows that count
    lp = linear_logprobs(flat_hidden.index_select(0, keep), weight, flat.index_select(0, keep),
                         temperature=temperature, chunk_size=chunk_size)  # (M,)
    if reduction == "none":
        zeros = flat_hidden.new_zeros(flat.shape[0], dtype=lp.dtype)
        return zeros.index_put((keep,), -lp).reshape(targets.shape)
    total = (-lp).sum()  # (not -lp.sum(): an empty sum would give -0.0)
    return total if reduction == "sum" else total / max(keep.numel(), 1)
