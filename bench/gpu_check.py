"""One GPU at real scale, in one command: random bf16 weights at the Qwen2.5-1.5B and 7B shapes
in the Hugging Face layout, rfprm beside transformers on the same weights. Writes one JSON.

  1. copy bandwidth (a big device-to-device copy: bytes read + written per second);
  2. 1.5B: the checkpoint written by transformers, read by rfprm.load_model; logits against
     transformers' on the same ids;
  3. decode tokens/s at batch 1 and 16, rfprm and transformers (greedy, exactly --new-tokens
     each), at 1.5B and 7B, and the memory-bandwidth roofline (weight bytes / bandwidth per
     step; batch rows share one read of the weights);
  4. PRM scoring throughput (backbone + ReasonFlux-PRM's step head, Sec. 3) against
     transformers' backbone with the same head, tokens/s;
  5. peak memory of one PRM training step and one GRPO-like step (policy forward + backward on
     sampled tokens, log-probs through rfprm.kernels.linear_logprobs) at 7B with LoRA and
     gradient checkpointing, beside rfprm.memory's estimate.

    python bench/gpu_check.py --out gpu_check.json            # on a GPU, < 8 min on one H100/H200
    python bench/gpu_check.py --device cpu --small            # the same code at tiny shapes (tests)
On the CPU peak memory is not measured (null in the JSON); the estimate is still written.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm.config import PRESETS, ModelConfig  # noqa: E402
from rfprm.errors import RfprmError, atomic_file, cli_main  # noqa: E402
from rfprm.generate import generate  # noqa: E402
from rfprm.kernels import linear_logprobs  # noqa: E402
from rfprm.lora import LoraConfig, apply_lora  # noqa: E402
from rfprm.memory import RunSettings, estimate  # noqa: E402
from rfprm.prm import make_step_head  # noqa: E402

SMALL = {"1.5b": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
         "7b": dict(vocab_size=512, hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False)}


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=2) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def bandwidth_gbs(device, n_bytes: int) -> float:
    x = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    return 2 * n_bytes / timed(lambda: y.copy_(x), device, repeats=5) / 1e9   # read + write


def hf_model(p: dict, device, dtype, seed=0):
    """A random transformers Qwen2ForCausalLM with the preset's shape, on `device`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(**p, max_position_embeddings=4096, rope_theta=p.get("rope_theta", 1e6),
                      torch_dtype=str(dtype).removeprefix("torch."))
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    return model.eval()


def rfprm_twin(hf, device, dtype):
    """An rfprm model on the same tensors as `hf` (its state_dict names are HF's)."""
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    with torch.device("meta"):
        model = rfprm.Qwen2ForCausalLM(cfg)
    state = {k: v for k, v in hf.state_dict().items() if k in model.state_dict()}
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    return model.eval()


def decode_rates(ours, hf, batch, prompt_len, new, device) -> dict:
    """Greedy tokens/s (all rows) of rfprm.generate and transformers' generate."""
    V = ours.cfg.vocab_size
    g = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, V, (batch, prompt_len), generator=g)
    ours_s = timed(lambda: generate(ours, prompts.tolist(), max_new_tokens=new, stop_ids=[]), device)
    ids = prompts.to(device)
    hf_s = timed(lambda: hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                     min_new_tokens=new, do_sample=False, pad_token_id=0), device)
    return {"rfprm_tok_s": batch * new / ours_s, "transformers_tok_s": batch * new / hf_s}


def prm_scoring(ours, hf, batch, seq, device) -> dict:
    """Tokens/s of backbone + step head over batch x seq tokens (the PRM's scoring pass)."""
    head = make_step_head(ours.cfg.hidden_size).to(device=device, dtype=ours.dtype)
    ids = torch.randint(0, ours.cfg.vocab_size, (batch, seq), device=device)
    with torch.inference_mode():
        t_ours = timed(lambda: head(ours.model(ids)), device)
        t_hf = timed(lambda: head(hf.model(input_ids=ids).last_hidden_state), device)
    return {"rfprm_tok_s": batch * seq / t_ours, "transformers_tok_s": batch * seq / t_hf}


def peak_train_step(p: dict, kind: str, batch, seq, lora_r, device, dtype) -> dict:
    """Peak memory of one 'prm' or 'grpo' step with LoRA and checkpointing, and the estimate."""
    cfg = ModelConfig(**p, max_position_embeddings=4096)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)   # built in bf16 directly: no float32 copy in the peak
    try:
        with torch.device(device):
            lm = rfprm.Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    head = make_step_head(cfg.hidden_size).to(device=device, dtype=dtype) if kind == "prm" else None
    apply_lora(lm, LoraConfig(r=lora_r))
    lm.model.gradient_checkpointing = True
    lm.train()
    params = [q for q in lm.parameters() if q.requires_grad] + (list(head.parameters()) if head else [])
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    for _ in range(2):  # the second step has the optimizer state alive during backward
        opt.zero_grad()
        h = lm.model(ids[:, :-1])                                         # (B, T, H)
        if kind == "prm":   # step-label loss at every position (the PRM's token-level head)
            logits = head(h).float()
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten() % 2)
        else:               # GRPO: -(advantage * log-prob of the sampled tokens)
            logp = linear_logprobs(h, lm.lm_head.weight, ids[:, 1:])      # (B, T)
            adv = torch.randn(batch, 1, device=device)
            loss = -(adv * logp).mean()
        loss.backward()
        opt.step()
    sync(device)
    head_params = sum(q.numel() for q in head.parameters()) if head else 0
    est = estimate(cfg, RunSettings(batch=batch, seq_len=seq, dtype=str(dtype).removeprefix("torch."),
                                    train=True, lora_r=lora_r, grad_checkpointing=True,
                                    lm_loss=False, head_params=head_params))
    # lm_loss=False for GRPO too: linear_logprobs never holds the full (B, T, V) logits
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    del lm, head, opt, params
    return {"batch": batch, "seq_len": seq, "lora_r": lora_r, "peak_gib": peak and peak / 2**30,
            "estimate_gib": est.total / 2**30, "estimate_parts_gib": {k: v / 2**30 for k, v in est.parts.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--small", action="store_true", help="tiny shapes in place of 1.5B and 7B (for tests)")
    ap.add_argument("--out", default="gpu_check.json", help="JSON file to write")
    ap.add_argument("--new-tokens", type=int, default=0, help="decoded tokens per row (default 64, 8 with --small)")
    ap.add_argument("--prompt-len", type=int, default=0, help="prompt tokens (default 128, 8 with --small)")
    args = ap.parse_args(argv)
    device = args.device
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RfprmError("gpu_check: --device cuda but no CUDA GPU is visible (use --device cpu --small)")
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    shapes = SMALL if args.small else {"1.5b": PRESETS["qwen2.5-1.5b"], "7b": PRESETS["qwen2.5-7b"]}
    new = args.new_tokens or (8 if args.small else 64)
    prompt_len = args.prompt_len or (8 if args.small else 128)
    train_batch, train_seq = (2, 16) if args.small else (4, 1024)
    report = {"device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
              "dtype": str(dtype).removeprefix("torch."), "small": args.small, "torch": torch.__version__}
    bw = bandwidth_gbs(device, 2**26 if args.small else 2**31)
    report["copy_bandwidth_gb_s"] = bw
    steps = tqdm(total=5, desc="gpu_check")
    for name, p in shapes.items():
        hf = hf_model(p, device, dtype)
        if name == "1.5b":  # through the checkpoint files: rfprm.load_model on what transformers wrote
            with tempfile.TemporaryDirectory() as tmp:
                hf.save_pretrained(tmp)
                ours = rfprm.load_model(tmp, device=device, dtype=dtype)
            ids = torch.randint(0, p["vocab_size"], (2, 64), device=device)
            with torch.inference_mode():
                a, b = ours(ids).float(), hf(ids).logits.float()
            report["logits_1.5b"] = {"max_abs_diff": (a - b).abs().max().item(),
                                     "rel_err": ((a - b).norm() / b.norm()).item(),
                                     "argmax_agree": (a.argmax(-1) == b.argmax(-1)).float().mean().item()}
        else:
            ours = rfprm_twin(hf, device, dtype)
        weight_bytes = sum(t.numel() * t.element_size() for t in {q.data_ptr(): q for q in ours.parameters()}.values())
        entry = {"weight_gib": weight_bytes / 2**30, "decode": {}}
        for batch in (1, 16):
            rates = decode_rates(ours, hf, batch, prompt_len, new, device)
            rates["roofline_tok_s"] = batch * bw * 1e9 / weight_bytes
            rates["rfprm_pct_roofline"] = 100 * rates["rfprm_tok_s"] / rates["roofline_tok_s"]
            entry["decode"][f"batch_{batch}"] = rates
        entry["prm_scoring"] = prm_scoring(ours, hf, 4 if args.small else 8, 64 if args.small else 1024, device)
        report[name] = entry
        del hf, ours
        steps.update(2)
    report["prm_train_step_7b"] = peak_train_step(shapes["7b"], "prm", train_batch, train_seq, 16, device, dtype)
    report["grpo_step_7b"] = peak_train_step(shapes["7b"], "grpo", train_batch, train_seq, 16, device, dtype)
    steps.update(1)
    steps.close()
    with atomic_file(args.out) as f:
        f.write(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli_main(main)
