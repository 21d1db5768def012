"""Peak memory of forward + backward: chunked `linear_logprobs` against the plain expression.

    python bench/bench_logprobs_memory.py                      # N=2048, H=896, V=151,936, CPU
    python bench/bench_logprobs_memory.py --device cuda --dtype bfloat16
    python bench/bench_logprobs_memory.py --rss                # also the fresh-process RSS check

Both variants compute log_softmax(hidden @ weight.T)[targets] for N rows, then backward into
hidden and weight. They are measured one after the other in the same run, on the same inputs.

How peak memory is measured, and why that way:
- CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus what was
  allocated before the call (the inputs).
- CPU: there is no max_memory_allocated, and the usual stand-ins are wrong for torch tensors:
  tracemalloc only sees Python's own allocator, not torch's; ru_maxrss is a process-wide high-water
  mark that never resets (so the second variant in a process cannot be measured) and includes
  allocator caching and BLAS scratch. Instead we run each variant under
  torch.profiler(profile_memory=True): torch's CPU allocator reports every tensor allocation and
  free to it, so a running sum over those events in time order is exactly the bytes held by
  tensors, and its maximum is the peak -- the CPU counterpart of max_memory_allocated. Tensors
  made before profiling starts (the inputs) are not in the sum.
- `--rss` adds a cross-check that trusts nothing in torch: each variant runs again in a fresh
  Python process, which reports its peak resident size (VmHWM) minus its resident size just
  before the call (Linux only). It also counts malloc's caching and BLAS buffers, so expect it
  a little above the allocator's number.

Both variants must produce weight.grad ([V, H]) and hidden.grad; the table shows the peak with
them and without them (the temporaries each method needs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rfprm.errors import RfprmError, atomic_file, check_writable, cli_main  # noqa: E402
from rfprm.kernels import default_chunk_rows, linear_logprobs, linear_logprobs_ref  # noqa: E402

MB = 2**20
VARIANTS = {"plain": linear_logprobs_ref, "fused": linear_logprobs}


def make_inputs(args):
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    hidden = torch.randn(args.rows, args.hidden, generator=g).to(args.device, dtype)
    weight = (torch.randn(args.vocab, args.hidden, generator=g) * args.hidden**-0.5).to(args.device, dtype)
    targets = torch.randint(0, args.vocab, (args.rows,), generator=g).to(args.device)
    return hidden.requires_grad_(), weight.requires_grad_(), targets


def step(fn, hidden, weight, targets):
    """Forward + backward; returns the log-probs (detached)."""
    logprobs = fn(hidden, weight, targets)
    logprobs.sum().backward()
    return logprobs.detach()


def cpu_peak_bytes(fn, *inputs):
    """Peak bytes held by tensors allocated during fn(*inputs), from the profiler's alloc events."""
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn(*inputs)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    held = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        held += e.nbytes()  # positive for an allocation, negative for a free
        peak = max(peak, held)
    return peak, out


def measure(name, args, inputs):
    hidden, weight, targets = inputs
    hidden.grad = weight.grad = None
    t0 = time.perf_counter()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = step(VARIANTS[name], *inputs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak, out = cpu_peak_bytes(step, VARIANTS[name], *inputs)
    seconds = time.perf_counter() - t0
    grads = hidden.grad.nbytes + weight.grad.nbytes
    return {"peak_mb": peak / MB, "grads_mb": grads / MB, "temp_mb": (peak - grads) / MB,
            "seconds": seconds, "logprobs": out, "hidden_grad": hidden.grad.clone()}


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # the kernel reports kB


def rss_child(args):
    """Run one variant in this (fresh) process; print how far resident memory rose over the call.

    The peak is VmHWM from /proc, not ru_maxrss: ru_maxrss survives fork+exec, so a child started
    by a parent that had just run the plain variant would report the parent's peak."""
    inputs = make_inputs(args)
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0), dropping make_inputs' temporaries
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = _proc_status_mb("VmRSS")
    step(VARIANTS[args.child], *inputs)
    print(json.dumps({"rss_mb": _proc_status_mb("VmHWM") - before}))


def rss_check(args, name):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--rows", str(args.rows),
           "--hidden", str(args.hidden), "--vocab", str(args.vocab), "--dtype", args.dtype]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RfprmError(f"RSS check for {name} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2048, help="N: tokens in the batch (default 2048)")
    p.add_argument("--hidden", type=int, default=896, help="H: hidden size (default 896, Qwen2.5-0.5B)")
    p.add_argument("--vocab", type=int, default=151936, help="V: vocabulary size (default Qwen's 151,936)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--rss", action="store_true", help="also measure RSS growth in fresh processes (CPU)")
    p.add_argument("--json", help="also write the table as JSON to this path")
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if min(args.rows, args.hidden, args.vocab) < 1:
        raise RfprmError("--rows, --hidden and --vocab must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RfprmError(f"--device {args.device}: CUDA is not available on this machine")
    if args.child:
        return rss_child(args)
    if args.json:
        check_writable(args.json)

    print(f"rows={args.rows} hidden={args.hidden} vocab={args.vocab} {args.dtype} on {args.device}; "
          f"[N, V] logits = {args.rows * args.vocab * 4 / MB:.0f} MB in float32; fused chunks of "
          f"{default_chunk_rows(args.vocab)} rows", flush=True)
    inputs = make_inputs(args)
    for name in VARIANTS:  # warm up BLAS and the profiler so that neither variant pays for it
        small = (inputs[0][:8].detach().requires_grad_(), inputs[1][:64].detach().requires_grad_(),
                 inputs[2][:8] % 64)
        measure(name, args, small)
    results = {}
    for name in VARIANTS:
        print(f"  running {name} ...", flush=True)
        results[name] = measure(name, args, inputs)
        if args.rss and not args.device.startswith("cuda"):
            results[name]["rss_mb"] = rss_check(args, name)

    plain, fused = results["plain"], results["fused"]
    lp_err = (plain["logprobs"] - fused["logprobs"]).abs().max().item()
    gh_err = (plain["hidden_grad"] - fused["hidden_grad"]).abs().max().item()
    cols = ["peak_mb", "temp_mb", "seconds"] + (["rss_mb"] if "rss_mb" in plain else [])
    print(f"\n{'':8}" + "".join(f"{c:>12}" for c in cols))
    for name, r in results.items():
        print(f"{name:8}" + "".join(f"{r[c]:12.1f}" for c in cols))
    ratio = {c: fused[c] / plain[c] for c in cols if c != "seconds"}
    print(f"{'ratio':8}" + "".join(f"{ratio[c]:12.1%}" if c in ratio else f"{'':12}" for c in cols))
    print(f"\npeak_mb includes weight.grad + hidden.grad ({plain['grads_mb']:.0f} MB, needed by both); "
          f"temp_mb is the rest.\nmax |difference|: log-probs {lp_err:.2e}, hidden grad {gh_err:.2e}")
    if args.json:
        table = {name: {c: r[c] for c in cols + ["grads_mb"]} for name, r in results.items()}
        table.update(config=vars(args), ratio=ratio, max_abs_diff={"logprobs": lp_err, "hidden_grad": gh_err})
        with atomic_file(args.json) as f:
            json.dump(table, f, indent=2)
    return 0


if __name__ == "__main__":
    cli_main(main)
