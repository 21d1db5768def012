"""rfprm.prm: each checkpoint layout in its exact on-disk form, scored against transformers.

References: transformers' Qwen2Model / Qwen2ForCausalLM on the same random weights, the head
applied by hand at the read-out positions, and the input ids built by transformers' own
tokenizer and chat template from the saved tokenizer files.
"""
import json

import pytest
import torch
from safetensors.torch import save_file

import rfprm
from rfprm import world
from rfprm.bpe import train_bpe
from rfprm.errors import RfprmError
from rfprm.model import Qwen2ForCausalLM, init_weights
from rfprm.prm import PRM, load_prm, prm_loss, with_step_token
from rfprm.prm_train import bucketed_batches
from rfprm.prm_layout import encode_record, prm_inputs, render
from rfprm.tokenizer import Tokenizer
from rfprm.trainer import TrainConfig, train

VOCAB, HIDDEN = 320, 32
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
CARD_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."  # Qwen2.5-Math-PRM card


@pytest.fixture(scope="module")
def tok():
    return train_bpe(world.world_corpus(400, 0), 300, SPECIALS)


@pytest.fixture(scope="module")
def traces():
    return [{k: r[k] for k in ("problem", "trajectory", "response")} for r in world.make_traces(6, 3)]


def hf_config(tied=True, architectures=None):
    from transformers import Qwen2Config
    return Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=72, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       rope_theta=10000.0, tie_word_embeddings=tied, architectures=architectures)


def perturb(module, seed=0):
    """HF zero-initialises biases and sets norms to one; make them count in the comparison."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return module.eval()


def hf_fast_tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path))


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=0)


# ----------------------------------------------------------------- Qwen2.5-Math-PRM / RF-7B layout
def make_qwen_prm(path, tok, seed=0):
    """The released 7B layout: config (Qwen2ForProcessRewardModel), model.* + score.*, no lm_head."""
    from transformers import Qwen2Model
    torch.manual_seed(seed)
    backbone = perturb(Qwen2Model(hf_config(tied=False)), seed)
    head = {"score.0.weight": torch.randn(HIDDEN, HIDDEN) * 0.3, "score.0.bias": torch.randn(HIDDEN) * 0.1,
            "score.2.weight": torch.randn(2, HIDDEN) * 0.3, "score.2.bias": torch.randn(2) * 0.1}
    state = {f"model.{n}": t.contiguous() for n, t in backbone.state_dict().items()} | head
    path.mkdir(parents=True)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    cfg = hf_config(tied=False, architectures=["Qwen2ForProcessRewardModel"]).to_dict()
    (path / "config.json").write_text(json.dumps(cfg))
    tok.save(path)
    return backbone, head


def test_qwen_layout_matches_transformers(tmp_path, tok, traces):
    backbone, head = make_qwen_prm(tmp_path / "qwen", tok)
    prm = load_prm(tmp_path / "qwen")
    assert (prm.head, prm.layout) == ("step", "qwen")
    assert "Qwen2.5-Math-PRM" in prm.describe() and "step head" in prm.describe()
    fast = hf_fast_tokenizer(tmp_path / "qwen")
    step_id = fast.convert_tokens_to_ids("<extra_0>")
    for r in traces[:3]:
        steps = [s.strip() for s in r["trajectory"].split("\n\n")]
        messages = [{"role": "system", "content": CARD_SYSTEM}, {"role": "user", "content": r["problem"]},
                    {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
        text = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([fast.encode(text)])
        with torch.no_grad():
            h = backbone(ids).last_hidden_state[0]
            logits = torch.relu(h @ head["score.0.weight"].T + head["score.0.bias"]) @ head["score.2.weight"].T \
                + head["score.2.bias"]
        ref = logits.softmax(-1)[ids[0] == step_id, 1]
        s = prm.score(**r)
        assert len(s.steps) == len(steps) == len(ref)
        assert close(s.steps, ref) and close(s.trajectory, ref[-1])          # trajectory = last step
        assert close(s.total, ref.mean() + prm.alpha * ref[-1])
        with torch.no_grad():  # the per-token forward agrees with the read-out
            assert close(prm(ids)[0].softmax(-1)[ids[0] == step_id, 1], ref)


def test_qwen_layout_response_as_step_and_rfprm_override(tmp_path, tok, traces):
    make_qwen_prm(tmp_path / "qwen", tok)
    r = traces[0]
    n = len(r["trajectory"].split("\n\n"))
    prm = load_prm(tmp_path / "qwen")
    prm.response_as_step = True
    s = prm.score(**r)
    assert len(s.steps) == n + 1 and s.trajectory == s.steps[-1]
    other = load_prm(tmp_path / "qwen", layout="rfprm")  # a 7B-style head read in rfprm's layout
    assert len(other.score(**r).steps) == n


# ----------------------------------------------------------------- ReasonFlux-PRM-1.5B layout
@pytest.mark.parametrize("tied,prefix", [(True, ""), (False, "reward_head.")])
def test_scalar_layout_matches_transformers(tmp_path, tok, traces, tied, prefix):
    from transformers import Qwen2ForCausalLM as HFCausalLM
    torch.manual_seed(1)
    lm = perturb(HFCausalLM(hf_config(tied=tied)), 1)
    path = tmp_path / "rf15"
    lm.save_pretrained(path)
    tok.save(path)
    w, b = torch.randn(1, HIDDEN) * 0.3, torch.randn(1) * 0.1
    torch.save({f"{prefix}weight": w, f"{prefix}bias": b}, path / "reward_head.pt")
    prm = load_prm(path)
    assert (prm.head, prm.layout) == ("scalar", "scalar") and "1.5B" in prm.describe()
    assert ("lm_head is not loaded" in prm.describe()) == (not tied)
    fast = hf_fast_tokenizer(path)
    texts = [r["problem"] + "\n" + "<think>\n" + r["trajectory"] + "\n</think>\n\n" + r["response"]
             for r in traces[:3]]
    for max_len in (2048, 40):  # 40: the truncated case, kept as the model card's truncation=True does
        prm.max_len = max_len
        enc = fast(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            h = lm.model(enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        last = enc["attention_mask"].sum(1) - 1                                 # last non-pad token
        ref = torch.sigmoid(h[torch.arange(3), last] @ w[0] + b)
        scores = prm.score_batch(traces[:3], batch_size=3)
        assert all(s.steps == [] and s.first_error == -1 for s in scores)
        assert close([s.trajectory for s in scores], ref)
        assert close([s.total for s in scores], ref)                            # no steps: total = trajectory


# ----------------------------------------------------------------- rfprm's own layout
def tiny_lm(vocab=VOCAB, seed=0):
    torch.manual_seed(seed)
    cfg = rfprm.preset("tiny", vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    lm = Qwen2ForCausalLM(cfg)
    init_weights(lm, std=0.2)
    return lm


def test_rfprm_layout_text_and_read_out(tok):
    text, n = render("rfprm", "Compute 6 * 4 + 3.", "First, 6 * 4 = 24.\n\nThen 24 + 3 = 27.",
                     "6 * 4 gives 24.\n\n24 + 3 gives 27, so the answer is \\boxed{27}\n")
    assert n == 2 and text == ("<|im_start|>user\nCompute 6 * 4 + 3.<|im_end|>\n<|im_start|>assistant\n"
                               "6 * 4 gives 24.\n\n24 + 3 gives 27, so the answer is \\boxed{27}\n\n"
                               "<think>\nFirst, 6 * 4 = 24.<extra_0>\n\nThen 24 + 3 = 27.<extra_0><extra_0>")
    ex = encode_record(tok, {"problem": "Compute 6 * 4 + 3.", "trajectory": "a\n\nb\n\n\nc",
                             "response": "r"}, "rfprm")
    markers = [i for i, t in enumerate(ex.ids) if t == tok.step_id]
    assert ex.step_positions == markers[:3] and ex.trajectory_position == markers[3] == len(ex.ids) - 1


def test_rfprm_round_trip_and_transformers_reads_backbone(tmp_path, tok, traces):
    prm = PRM.from_lm(tiny_lm(), tok, layout="rfprm", threshold=0.37, alpha=0.8)
    assert (prm.head, prm.layout) == ("step", "rfprm")
    before = prm.score_batch(traces)
    prm.save(tmp_path / "mine")
    cfg = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForProcessRewardModel"]
    assert cfg["rfprm_prm"] == {"layout": "rfprm", "head": "step", "threshold": 0.37, "alpha": 0.8,
                                "response_as_step": False}
    again = load_prm(tmp_path / "mine")
    assert (again.layout, again.threshold, again.alpha) == ("rfprm", 0.37, 0.8)
    names = rfprm.checkpoint.tensor_names(tmp_path / "mine")
    assert "lm_head" not in " ".join(names)
    # HF's head names on disk (score.0.*, score.2.*); in Python the head is step_head, and
    # score() stays the scoring method
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= names
    assert not any(n.startswith("step_head") for n in names) and callable(again.score)
    assert torch.equal(again.step_head[2].weight, prm.step_head[2].weight)
    after = again.score_batch(traces)
    ex = again.examples(traces[:1])[0]                 # the read-outs, against the per-token forward
    with torch.no_grad():
        per_token = again(torch.tensor([ex.ids]))[0].softmax(-1)[:, 1]
    markers = [i for i, t in enumerate(ex.ids) if t == tok.step_id]
    assert close(after[0].steps, per_token[markers[:-1]]) and close(after[0].trajectory, per_token[-1])
    assert [s.steps for s in after] == [s.steps for s in before]           # bit-identical
    assert [s.trajectory for s in after] == [s.trajectory for s in before]
    for s in after:
        assert s.total == pytest.approx(sum(s.steps) / len(s.steps) + 0.8 * s.trajectory)
        assert s.first_error == next((i for i, v in enumerate(s.steps) if v < 0.37), -1)
    from transformers import Qwen2Model as HFModel
    hf = HFModel.from_pretrained(tmp_path / "mine").eval()  # ignores score.*, reads the backbone
    ids = torch.tensor([again.examples(traces[:1])[0].ids])
    with torch.no_grad():
        assert close(hf(ids).last_hidden_state, again.model(ids), tol=1e-4)
    with pytest.raises(RfprmError, match="load_prm"):
        rfprm.load_model(tmp_path / "mine")                     # a PRM is not a language model


@pytest.mark.parametrize("layout", ["rfprm", "qwen", "scalar"])
def test_score_batch_equals_score_one_by_one(tmp_path, tok, traces, layout):
    if layout == "scalar":
        from transformers import Qwen2ForCausalLM as HFCausalLM
        torch.manual_seed(2)
        path = tmp_path / "s"
        perturb(HFCausalLM(hf_config())).save_pretrained(path)
        tok.save(path)
        torch.save({"weight": torch.randn(1, HIDDEN), "bias": torch.randn(1)}, path / "reward_head.pt")
        prm = load_prm(path)
    else:
        prm = PRM.from_lm(tiny_lm(seed=3), tok, layout=layout)
        torch.nn.init.normal_(prm.step_head[2].weight, std=0.5)   # scores away from 0.5, so errors show
    batched = prm.score_batch(traces, batch_size=4)            # lengths differ: padding in every batch
    for r, b in zip(traces, batched):
        one = prm.score(**r)
        assert close(one.steps, b.steps) and close(one.trajectory, b.trajectory)
        assert close(one.total, b.total)
    assert len({round(s.trajectory, 6) for s in batched}) > 1  # not a constant


# ----------------------------------------------------------------- training
def labelled(traces, step=0.9, final=0.1):
    return [r | {"step_rewards": [step] * len(r["trajectory"].split("\n\n")), "trajectory_reward": final}
            for r in traces]


def test_prm_loss_is_the_paper_objective(tok, traces):
    prm = PRM.from_lm(tiny_lm(), tok)
    records = labelled(traces[:3])
    records[0]["step_rewards"][0] = 0.2
    batch = prm_inputs(tok, records, "rfprm")
    loss, metrics = prm_loss(prm, batch, lambda_step=0.7, lambda_final=2.0)
    with torch.no_grad():
        step_p, traj_p = prm.read(batch)
    per_trace = [((p - torch.tensor(r["step_rewards"])) ** 2).mean()
                 for p, r in zip(step_p.split(batch.steps_per_row()), records)]
    expected = 0.7 * torch.stack(per_trace).mean() + 2.0 * ((traj_p - 0.1) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(metrics) == {"step_mse", "final_mse"}
    loss.backward()
    assert prm.step_head[0].weight.grad is not None and prm.model.embed_tokens.weight.grad is not None


def test_training_reduces_loss_through_the_trainer(tok, traces):
    prm = PRM.from_lm(tiny_lm(), tok)
    examples = prm.examples(labelled(traces))
    batches = bucketed_batches(examples, [True] * len(examples), batch_size=4, seed=0, pad_id=tok.pad_id, bucket=1)
    batch_at = lambda step, micro: batches(step, micro)[0]
    assert torch.equal(batch_at(3, 0).input_ids, batch_at(3, 0).input_ids)   # pure function
    first, _ = prm_loss(prm, batch_at(0, 0))
    history = train(prm, prm_loss, batch_at, TrainConfig(steps=12, lr=1e-2, warmup=0, log_every=1))
    last, _ = prm_loss(prm, batch_at(0, 0))
    assert last.item() < 0.5 * first.item() and history[-1]["loss"] < history[0]["loss"]
    s = prm.score(**traces[0])
    assert all(abs(v - 0.9) < abs(0.5 - 0.9) for v in s.steps) and s.trajectory < 0.5


def test_training_needs_targets(tok, traces):
    from rfprm.prm_train import PRMTrainSpec, train_prm_model
    with pytest.raises(RfprmError, match="no example has step_rewards or trajectory_reward"):
        train_prm_model(tiny_lm(), tok, traces, PRMTrainSpec(steps=1))


def test_qwen_layout_labels(tok, traces):
    records = labelled(traces[:2])
    plain = prm_inputs(tok, records, "qwen")                  # trajectory read-out = last step: unused
    assert torch.isnan(plain.trajectory_targets).all() and not torch.isnan(plain.step_targets).any()
    with_resp = prm_inputs(tok, records, "qwen", response_as_step=True)
    assert (with_resp.trajectory_targets == 0.1).all()
    assert torch.isnan(with_resp.step_targets).sum() == 2     # the response steps carry the final target
    prm = PRM.from_lm(tiny_lm(), tok, layout="qwen", response_as_step=True)
    loss, _ = prm_loss(prm, with_resp)
    loss.backward()


# ----------------------------------------------------------------- bad input
def test_errors_on_bad_traces(tok, traces):
    prm = PRM.from_lm(tiny_lm(), tok)
    r = traces[0]
    with pytest.raises(RfprmError, match="no steps"):
        prm.score(r["problem"], "\n\n  \n", r["response"])
    with pytest.raises(RfprmError, match="no response"):
        prm.score(r["problem"], r["trajectory"], "  ")
    with pytest.raises(RfprmError, match=r"record 1: missing field 'response'"):
        prm.score_batch([r, {"problem": "p", "trajectory": "t"}])
    with pytest.raises(RfprmError, match="step marker"):
        prm.score(r["problem"], "a<extra_0>b", r["response"])
    with pytest.raises(RfprmError, match="record 0: step_rewards has 1 values but the trajectory has"):
        prm_inputs(tok, [r | {"step_rewards": [0.5], "trajectory_reward": 1.0}], "rfprm")
    prm.max_len = 20
    with pytest.raises(RfprmError, match="more than max_len 20"):
        prm.score(**r)


def test_plain_lm_checkpoint_is_refused(hf_qwen2, tok):
    path, _ = hf_qwen2()
    with pytest.raises(RfprmError, match=r"has no reward head \(neither score.\* tensors nor "
                                         r"reward_head.pt\); it is a language model: use rfprm.load_model"):
        load_prm(path)


def test_pickled_module_reward_head_is_refused(tmp_path, tok):
    from transformers import Qwen2ForCausalLM as HFCausalLM
    path = tmp_path / "rf15"
    HFCausalLM(hf_config()).save_pretrained(path)
    tok.save(path)
    torch.save(torch.nn.Linear(HIDDEN, 1), path / "reward_head.pt")  # a pickled class, not tensors
    with pytest.raises(RfprmError, match="not a plain tensor state dict.*will not unpickle"):
        load_prm(path)
    torch.save({"weight": torch.randn(1, HIDDEN + 1), "bias": torch.randn(1)}, path / "reward_head.pt")
    with pytest.raises(RfprmError, match="expected Linear"):
        load_prm(path)


def test_step_head_needs_the_step_token(tmp_path, tok):
    no_step = Tokenizer(tok.mergeable_ranks, {t: i for t, i in tok.special_tokens.items() if t != "<extra_0>"})
    path = tmp_path / "qwen"
    make_qwen_prm(path, no_step)
    with pytest.raises(RfprmError, match="no <extra_0> token"):
        load_prm(path)
    added = with_step_token(no_step, VOCAB)                   # PRM.from_lm adds it instead
    assert added.step_id == no_step.vocab_size
    assert PRM.from_lm(tiny_lm(), no_step).tok.step_id == added.step_id
    with pytest.raises(RfprmError, match="no embedding row"):
        with_step_token(no_step, no_step.vocab_size)


def test_compiled_backbone_agrees_with_eager(tok, traces):
    """PRM.compile_backbone (train_prm --compile): the same losses and gradients as the eager
    reference, on two batch lengths (dynamic shapes); compile_backbone(False) restores eager."""
    prm = PRM.from_lm(tiny_lm(), tok)
    records = labelled(traces)
    results = {}
    for mode in ("eager", "compiled"):
        if mode == "compiled":
            prm.compile_backbone()
        out = []
        for recs in (records[:2], records[2:5]):
            prm.zero_grad(set_to_none=True)
            loss, _ = prm_loss(prm, prm_inputs(tok, recs, "rfprm"))
            loss.backward()
            out.append((loss.detach(), prm.model.layers[0].self_attn.q_proj.weight.grad.clone()))
        results[mode] = out
    for (l1, g1), (l2, g2) in zip(results["eager"], results["compiled"]):
        assert torch.allclose(l1, l2, atol=1e-5) and torch.allclose(g1, g2, atol=1e-5, rtol=1e-4)
    from torch._dynamo.utils import counters
    assert counters["stats"]["unique_graphs"] > 0   # it compiled, not a silent eager fallback
    assert torch._dynamo.config.suppress_errors is False   # nothing switched off for everyone else
    from rfprm.model import compile_cache_dir
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    assert cache_dir() == compile_cache_dir()        # inductor wrote to the kernel set's own folder
    prm.compile_backbone(False)
    assert "forward" not in vars(prm.model)          # the class's eager forward again
