"""`python -m rfprm.export vllm`: vLLM's Qwen2ForProcessRewardModel layout, read back by rfprm and,
as vLLM's STEP pooling reads it, by transformers (tokenizer, backbone) plus the score head."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rfprm
from rfprm.errors import RfprmError
from rfprm.export import export_vllm, main, vllm_prompt
from rfprm.prm import PRM, load_prm

ROOT = Path(__file__).resolve().parents[1]
TRACES = [{"problem": "Compute 6 * 4 + 3.", "trajectory": "6 * 4 = 24.\n\n24 + 3 = 27.",
           "response": "So the answer is \\boxed{27}."},
          {"problem": "What is 2 + 2?", "trajectory": "2 + 2 = 5.", "response": "\\boxed{5}"}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-prm-vllm"
    assert main(["vllm", "--prm", "tiny-prm", "--out", str(out)]) == 0
    return out


def test_layout_is_what_vllm_loads(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForProcessRewardModel"] and config["model_type"] == "qwen2"
    assert config["num_labels"] == 2
    tok = load_prm("tiny-prm").tok
    assert config["rfprm_vllm"]["step_token"] == "<extra_0>"
    assert config["rfprm_vllm"]["step_tag_id"] == tok.step_id
    assert config["rfprm_vllm"]["pooler_config"] == {"pooling_type": "STEP", "step_tag_id": tok.step_id}
    names = set(load_file(exported / "model.safetensors"))
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= names
    assert not any(n.startswith("lm_head") for n in names)
    assert all(n.startswith(("model.", "score.")) for n in names)
    assert (exported / "tokenizer.json").is_file() and (exported / "tokenizer_config.json").is_file()
    assert "vllm serve" in (exported / "README.md").read_text()


@pytest.mark.parametrize("which", ["exported", "exported_qwen"])
def test_round_trip_scores_are_equal(which, request):
    exported = request.getfixturevalue(which)
    a = load_prm("tiny-prm" if which == "exported" else exported.parent / "qwen-prm")
    b = load_prm(exported)
    assert (a.layout, a.threshold, a.alpha) == (b.layout, b.threshold, b.alpha)
    for sa, sb in zip(a.score_batch(TRACES), b.score_batch(TRACES)):
        assert sa.steps == sb.steps and sa.trajectory == sb.trajectory and sa.total == sb.total


@pytest.fixture(scope="module")
def exported_qwen(tmp_path_factory):
    """A step-head PRM in the Qwen2.5-Math-PRM layout (chat template, n markers for n steps)."""
    from rfprm.model import Qwen2ForCausalLM, init_weights
    root = tmp_path_factory.mktemp("export_qwen")
    torch.manual_seed(1)
    lm = Qwen2ForCausalLM(rfprm.preset("tiny", vocab_size=320, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    init_weights(lm, std=0.2)
    PRM.from_lm(lm, load_prm("tiny-prm").tok, layout="qwen", threshold=0.4).save(root / "qwen-prm")
    return export_vllm(root / "qwen-prm", root / "qwen-prm-vllm")


@pytest.mark.parametrize("which", ["exported", "exported_qwen"])
def test_step_pooling_as_vllm_does_it_gives_rfprm_scores(which, request):
    """vLLM: tokenize the prompt with the HF tokenizer, run the backbone, apply `score` at every
    step-tag token, softmax, keep p[1]. transformers stands in for vLLM's backbone here."""
    from transformers import AutoTokenizer, Qwen2Model
    exported = request.getfixturevalue(which)
    prm = load_prm(exported)
    hf_tok = AutoTokenizer.from_pretrained(exported)
    backbone = Qwen2Model.from_pretrained(exported).eval()
    head = load_file(exported / "model.safetensors")
    step_id = json.loads((exported / "config.json").read_text())["rfprm_vllm"]["step_tag_id"]
    for trace in TRACES:
        prompt = vllm_prompt(prm, **trace)
        ids = hf_tok(prompt, add_special_tokens=False)["input_ids"]
        assert ids == prm.tok.encode(prompt)
        with torch.no_grad():
            h = backbone(torch.tensor([ids])).last_hidden_state[0]
            at = h[torch.tensor(ids) == step_id]                                  # (markers, H)
            logits = torch.relu(at @ head["score.0.weight"].T + head["score.0.bias"]) @ head["score.2.weight"].T \
                + head["score.2.bias"]
            probs = logits.softmax(-1)[:, 1].tolist()
        s = prm.score(**trace)
        if prm.layout == "rfprm":                          # n step pairs, then the trajectory's
            assert len(probs) == len(s.steps) + 1 and probs[:-1] == pytest.approx(s.steps, abs=1e-5)
        else:                                              # qwen: n pairs, the last is the trajectory
            assert prm.layout == "qwen" and probs == pytest.approx(s.steps, abs=1e-5)
        assert probs[-1] == pytest.approx(s.trajectory, abs=1e-5)


def test_scalar_head_is_refused_with_advice(tmp_path):
    tok = load_prm("tiny-prm").tok
    cfg = rfprm.preset("tiny", vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    PRM(cfg, tok, head="scalar", layout="scalar").save(tmp_path / "scalar")
    with pytest.raises(RfprmError, match="no matching vLLM architecture; score it with rfprm"):
        export_vllm(tmp_path / "scalar", tmp_path / "out")
    proc = subprocess.run([sys.executable, "-m", "rfprm.export", "vllm", "--prm", str(tmp_path / "scalar"),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
