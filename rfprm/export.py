"""Export an rfprm PRM in the layout vLLM serves for Qwen's process reward model.

    python -m rfprm.export vllm --prm DIR --out DIR2
    vllm serve DIR2 --runner pooling --pooler-config '{"pooling_type": "STEP", "step_tag_id": ID}'

vLLM serves Qwen2.5-Math-PRM (and ReasonFlux-PRM-7B, same head) as `Qwen2ForProcessRewardModel`:
a Qwen2 backbone (`model.*`), the head `score = Linear(h, h) -> ReLU -> Linear(h, 2)` (tensors
`score.0.*`, `score.2.*`), no `lm_head`, and a pooling step that returns softmax(logits) at every
step-tag token. rfprm's step-head PRM (arXiv 2506.18896: a 2-class step head on a
Qwen2.5 backbone) has exactly that module tree, so the export is a re-save with what vLLM reads:

- config.json: `architectures: ["Qwen2ForProcessRewardModel"]`, `model_type: "qwen2"`,
  `num_labels: 2`, plus `rfprm_vllm` recording the step token (`<extra_0>`), its id, the input
  layout, threshold and alpha, and the exact `--pooler-config` to serve it with. The
  `rfprm_prm` object stays, so `rfprm.load_prm(DIR2)` reads it back unchanged.
- model.safetensors (no lm_head), tokenizer.json + tokenizer_config.json, README.md (how to
  serve and query it). Written through `atomic_dir`: a failed export leaves nothing behind.

What a vLLM user gets: per request, one [p_wrong, p_right] pair per `<extra_0>` in the input
text; the step score is p_right. vLLM applies no template for /pooling, so the client sends the
PRM's input text itself, built exactly as rfprm builds it (`vllm_prompt` below; the layouts are
in rfprm/prm_layout.py):
- layout "rfprm" (rfprm-trained PRMs): response first, then the thinking steps, each closed by
  `<extra_0>`, plus one final `<extra_0>`. n steps give n + 1 pairs: the first n are the step
  scores R(s_t | x, s_<t, a), the last is the trajectory score R(x, y).
- layout "qwen" (Qwen2.5-Math-PRM / ReasonFlux-PRM-7B): system + user + steps joined by
  `<extra_0>`; n steps give n pairs and the trajectory score is the last one.
A scalar-head PRM (ReasonFlux-PRM-1.5B: a causal LM plus `reward_head = Linear(h, 1)`) has no
vLLM architecture (vLLM's Qwen2ForRewardModel has a different, 2-layer head); it is refused
with that message: score it with rfprm (`rfprm.load_prm(...).score_batch`) or serve a step-head
PRM instead.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .checkpoint import save_state_dict
from .errors import RfprmError, atomic_dir, cli_main
from .prm import PRM, load_prm, to_hf_name
from .prm_layout import render
from .tokenizer import STEP_TAG

VLLM_ARCH = "Qwen2ForProcessRewardModel"


def pooler_config(prm: PRM) -> dict:
    """vLLM's pooler settings: STEP pooling, read at the step token."""
    return {"pooling_type": "STEP", "step_tag_id": prm.tok.step_id}


def vllm_prompt(prm: PRM, problem: str, trajectory: str, response: str) -> str:
    """The exact text to send to the served PRM: what rfprm itself scores for this trace."""
    return render(prm.layout, problem, trajectory, response, prm.response_as_step)[0]


def vllm_config(prm: PRM) -> dict:
    cfg = prm.cfg.replace(torch_dtype=str(prm.dtype).removeprefix("torch."), architectures=[VLLM_ARCH])
    config = cfg.to_hf_dict()
    config.update(model_type="qwen2", num_labels=2)
    config["rfprm_prm"] = {"layout": prm.layout, "head": prm.head, "threshold": prm.threshold,
                           "alpha": prm.alpha, "response_as_step": prm.response_as_step}
    reads = ("n step scores, then the trajectory score (n + 1 pairs)" if prm.layout == "rfprm"
             else "n step scores; the trajectory score is the last")
    config["rfprm_vllm"] = {"step_token": STEP_TAG, "step_tag_id": prm.tok.step_id, "layout": prm.layout,
                            "scores": reads, "threshold": prm.threshold, "alpha": prm.alpha,
                            "pooler_config": pooler_config(prm)}
    return config


def serve_readme(prm: PRM, name: str) -> str:
    pooler = json.dumps(pooler_config(prm))
    example = vllm_prompt(prm, "Compute 6 * 4 + 3.", "6 * 4 = 24.\n\n24 + 3 = 27.", "The answer is \\boxed{27}.")
    return f"""# {name}: an rfprm PRM for vLLM

Serve (vLLM's `Qwen2ForProcessRewardModel`, a pooling model):

    vllm serve {name} --runner pooling --pooler-config '{pooler}'

(older vLLM: `--task reward --override-pooler-config '{pooler}'`). Query:

    curl localhost:8000/pooling -H 'Content-Type: application/json' \\
      -d '{{"model": "{name}", "input": PROMPT}}'

The reply's `data[0].data` is one [p_wrong, p_right] pair per `{STEP_TAG}` (id {prm.tok.step_id})
in PROMPT; the score is p_right. Layout `{prm.layout}`: {vllm_config(prm)["rfprm_vllm"]["scores"]}.
Build PROMPT exactly as rfprm scores a trace:

    from rfprm import load_prm
    from rfprm.export import vllm_prompt
    prompt = vllm_prompt(load_prm("{name}"), problem, trajectory, response)

For example:

```
{example}
```

First step below {prm.threshold:.4g} = predicted first error; total = mean(steps) + {prm.alpha:g} * trajectory.
"""


def export_vllm(prm_dir, out) -> Path:
    """Write the PRM at `prm_dir` to `out` in vLLM's Qwen2ForProcessRewardModel layout."""
    prm = load_prm(prm_dir)
    if prm.head != "step":
        raise RfprmError(f"{prm_dir}: a scalar-head PRM (ReasonFlux-PRM-1.5B layout, reward_head "
                         f"Linear(h,1) at the last token) has no matching vLLM architecture; score "
                         f"it with rfprm (rfprm.load_prm(...).score_batch), or train a step-head PRM "
                         f"(the 7B / Qwen2.5-Math-PRM head) and export that")
    out = Path(out)
    state = {to_hf_name(n): t for n, t in prm.state_dict().items()}   # model.*, score.*: vLLM's names
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(vllm_config(prm), indent=2))
        save_state_dict(state, tmp)
        prm.tok.save(tmp)
        (tmp / "README.md").write_text(serve_readme(prm, out.name))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rfprm.export",
                                     description="Write an rfprm PRM in another engine's layout.")
    sub = parser.add_subparsers(dest="target", required=True)
    v = sub.add_parser("vllm", help="Qwen2ForProcessRewardModel layout, served by `vllm serve --runner pooling`")
    v.add_argument("--prm", required=True, help="PRM checkpoint directory or shipped name (e.g. tiny-prm)")
    v.add_argument("--out", required=True, help="directory to write (replaced atomically)")
    args = parser.parse_args(argv)
    out = export_vllm(args.prm, args.out)
    prm = load_prm(out)
    print(f"wrote {out} ({VLLM_ARCH}, step token {STEP_TAG} id {prm.tok.step_id}, layout {prm.layout})")
    print(f"serve: vllm serve {out} --runner pooling --pooler-config '{json.dumps(pooler_config(prm))}'")
    return 0


if __name__ == "__main__":
    cli_main(main)
