"""Peak memory of rfprm.load_model on a 0.5B-shaped random checkpoint, against the file size.

The checkpoint (Qwen2.5-0.5B's real shapes, random bf16 weights) is written once to a temporary
directory. Each load then runs in a fresh Python process that reports its peak resident memory
(VmHWM, after resetting it through /proc/self/clear_refs) minus its resident memory just before
the call, so torch's own import cost is not counted; "held" is the resident memory after the
load and, for rfprm, after fetching what the decode step reads (views of the weights, no copies). rfprm builds the model on the meta device
and reads each tensor straight into its final buffer, so the peak should stay close to one copy
of the weights. For comparison the same figure is printed for transformers' from_pretrained.

    python bench/bench_load_memory.py                 # 0.5B shape, bf16 file
    python bench/bench_load_memory.py --shape tiny
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, torch
sys.path.insert(0, {root!r})
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import rfprm
if {which!r} == "transformers":
    from transformers import Qwen2ForCausalLM
open("/proc/self/clear_refs", "w").write("5")   # reset the peak (VmHWM) to the current RSS
before = rss("VmRSS")
if {which!r} == "rfprm":
    m = rfprm.load_model({path!r}, dtype={dtype!r})
else:
    m = Qwen2ForCausalLM.from_pretrained({path!r}, dtype=getattr(torch, {dtype!r}))
peak = rss("VmHWM") - before
if {which!r} == "rfprm":
    m.model.decode_weights()                     # what the decode step reads: views, no copies
print(json.dumps({{"peak": peak, "held": rss("VmRSS") - before, "params": sum(p.numel() for p in m.parameters())}}))
"""


def make_checkpoint(shape: str, out: Path):
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, str(ROOT))
    from rfprm.config import preset
    from rfprm.model import Qwen2ForCausalLM
    cfg = preset(shape, torch_dtype="bfloat16")
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    state = {n: (torch.randn(p.shape, generator=g) * 0.02).to(torch.bfloat16)
             for n, p in model.state_dict().items() if n not in model.tied_parameter_names()}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    return (out / "model.safetensors").stat().st_size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen2.5-0.5b", help="a preset from rfprm.config.PRESETS")
    ap.add_argument("--skip-transformers", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        size = make_checkpoint(args.shape, Path(tmp))
        print(f"{args.shape}: checkpoint file {size / 2**20:.0f} MiB (bf16)")
        print(f"{'loader':<14}{'dtype':<10}{'peak MiB':>10}{'x file':>8}{'held MiB':>10}{'x file':>8}")
        runs = [("rfprm", "bfloat16"), ("rfprm", "float32")]
        if not args.skip_transformers:
            runs += [("transformers", "bfloat16")]
        for which, dtype in runs:
            code = CHILD.format(root=str(ROOT), which=which, path=tmp, dtype=dtype)
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if res.returncode:
                print(f"{which:<14}{dtype:<10} failed: {res.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{which:<14}{dtype:<10}{r['peak'] / 2**20:>10.0f}{r['peak'] / size:>8.2f}"
                  f"{r['held'] / 2**20:>10.0f}{r['held'] / size:>8.2f}")
        print("float32 holds twice the bytes of the bf16 file by definition (2.00x is one copy).")


if __name__ == "__main__":
    main()
