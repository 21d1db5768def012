"""The marker auxiliary: its targets from the task's step_result or the start model's own
readings (rfprm.prm_train.lm_step_results, rfprm.prm_recipe.marker_targets)."""
import json
import re

import pytest
import torch

import rfprm


def test_marker_targets_name_the_correct_result(quick_policy):
    """add_marker_targets: per step, the last token of the step's correct result (a slipped
    step still gets the right one; a step without an equation none); collate and make_loss carry
    them, and the marker term trains the backbone."""
    from rfprm import world
    from rfprm.prm import PRM
    from rfprm.prm_layout import collate, prm_examples
    from rfprm.errors import RfprmError
    from rfprm.prm_train import PRMTrainSpec, add_marker_targets, make_loss
    assert world.step_result("Then 6 * 13 = 88.") == "78" and world.step_result("First, 20 - 7 = 13.") == "13"
    assert world.step_result("Let me check the problem again.") is None
    lm, tok = rfprm.load_model(quick_policy), rfprm.load_tokenizer(quick_policy)
    prm = PRM.from_lm(lm, tok)
    recs = [{"problem": "Compute 2 * (6 * (20 - 7)).", "response": "so the answer is \\boxed{156}",
             "trajectory": "First, 20 - 7 = 13.\n\nThen 6 * 13 = 88.\n\nLet me check.\n\nThen 2 * 88 = 176.",
             "step_rewards": [1.0, 0.0, 0.4, 1.0]},
            {"problem": "Compute 1 + 9.", "trajectory": "First, 1 + 9 = 10.", "response": "\\boxed{10}",
             "step_rewards": [1.0]}]
    examples = prm_examples(prm.tok, recs, "rfprm", prm.max_len)
    add_marker_targets(prm.tok, examples, recs, world.step_result)
    digit = {d: prm.tok.encode(str(d))[-1] for d in range(10)}
    assert examples[0].marker_targets == [[digit[3]], [digit[8]], [], [digit[6]]]   # 13, 78 (not 88), none, 176
    assert examples[1].marker_targets == [[digit[0]]]
    batch = collate(examples, prm.tok.pad_id)
    assert batch.marker_targets.tolist() == [[digit[3]], [digit[8]], [-100], [digit[6]], [digit[0]]]
    every = prm_examples(prm.tok, recs, "rfprm", prm.max_len)     # tokens="all": the whole result, padded
    add_marker_targets(prm.tok, every, recs, world.step_result, "all")
    assert every[0].marker_targets == [[digit[1], digit[3]], [digit[7], digit[8]], [],
                                       [digit[1], digit[7], digit[6]]]
    assert collate(every, prm.tok.pad_id).marker_targets.tolist() == [
        [digit[1], digit[3], -100], [digit[7], digit[8], -100], [-100] * 3,
        [digit[1], digit[7], digit[6]], [digit[1], digit[0], -100]]
    with pytest.raises(RfprmError, match="'last' or 'all'"):
        add_marker_targets(prm.tok, every, recs, world.step_result, "first")
    all_batch = collate(every, prm.tok.pad_id)
    _, m_all = make_loss(PRMTrainSpec(lambda_final=0.0, marker_aux=0.5))(prm, (all_batch, torch.tensor([False, True])))
    with torch.no_grad():   # by hand: the LM head at each marker, one cross-entropy per named token, averaged
        h = prm.model(all_batch.input_ids)[all_batch.step_rows, all_batch.step_cols]
        logp = torch.log_softmax(h @ prm.model.embed_tokens.weight.T, -1)
        terms = [-logp[i, t] for i, row in enumerate(all_batch.marker_targets.tolist()) for t in row if t >= 0]
    assert len(terms) == 9 and m_all["marker"] == pytest.approx(torch.stack(terms).mean().item(), rel=1e-4)
    assert collate(prm_examples(prm.tok, recs, "rfprm", prm.max_len), prm.tok.pad_id).marker_targets is None
    assert batch.to("cpu").marker_targets is not None
    sound = torch.tensor([False, True])
    plain, metrics = make_loss(PRMTrainSpec(lambda_final=0.0))(prm, (batch, sound))
    with_marker, metrics_m = make_loss(PRMTrainSpec(lambda_final=0.0, marker_aux=0.5))(prm, (batch, sound))
    assert "marker" not in metrics and metrics_m["marker"] > 0
    assert with_marker.item() == pytest.approx(plain.item() + 0.5 * metrics_m["marker"], rel=1e-5)
    w = prm.model.layers[0].self_attn.q_proj.weight    # the marker term reaches the backbone
    plain.backward()
    g_plain, w.grad = w.grad.clone(), None
    with_marker.backward()
    assert not torch.allclose(w.grad, g_plain, rtol=1e-3, atol=1e-7)


def test_marker_aux_needs_a_target_function_and_tied_embeddings(quick_policy):
    from rfprm.errors import RfprmError
    from rfprm.prm_train import PRMTrainSpec, train_prm_model
    lm, tok = rfprm.load_model(quick_policy), rfprm.load_tokenizer(quick_policy)
    recs = [{"problem": "Compute 1 + 9.", "trajectory": "First, 1 + 9 = 10.", "response": "\\boxed{10}",
             "step_rewards": [1.0]}]
    spec = PRMTrainSpec(steps=1, batch_size=1, marker_aux=0.5, lm_aux=0.0, ckpt_every=0)
    with pytest.raises(RfprmError, match="marker_target"):
        train_prm_model(lm, tok, recs, spec)
    lm.cfg = lm.cfg.replace(tie_word_embeddings=False)
    with pytest.raises(RfprmError, match="marker_aux needs a model with tied embeddings"):
        train_prm_model(lm, tok, recs, spec, marker_target=lambda step: "10")


def test_lm_step_results_read_where_the_model_parts_from_the_written_result(monkeypatch):
    """lm_step_results (marker_source="model"), against a plain reference: along each step's
    written result and the token after it, the LM's greedy next token from the text before
    (generate_ref, one token); at the first it would write otherwise, the reading is the written
    part plus that token; on the shipped policy and world traces with slips. add_marker_targets
    then takes the readings instead of the task's step_result."""
    from rfprm import world
    from rfprm.answers import format_trace
    from rfprm.generate import generate_ref
    from rfprm.prm import PRM
    from rfprm.prm_layout import prm_examples
    from rfprm.prm_train import add_marker_targets, lm_step_results
    from rfprm.steps import split_steps
    lm, tok = rfprm.load_model("tiny-policy"), rfprm.load_tokenizer("tiny-policy")
    recs = [r for r in world.make_traces(60, 5) if r["teacher"] in ("sloppy", "clean", "lucky")][:10]
    slip = {"problem": "Compute 2 * (6 * (20 - 7)).", "response": "so the answer is \\boxed{156}",
            "trajectory": "First, 20 - 7 = 13.\n\nThen 6 * 13 = 88.\n\nLet me check.\n\nThen 2 * 88 = 176."}
    recs += [slip, {**slip, "trajectory": "First, 20 - 7 = 13.\n\nThen 6 * 13 = 7."}]   # a result cut short
    got = lm_step_results(lm, tok, recs, batch_size=5, progress=False)
    agree = differ = 0
    for r, readings in zip(recs, got):
        prompt = tok.chat([{"role": "user", "content": r["problem"]}], add_generation_prompt=True)
        body, pos = format_trace(r["trajectory"], r["response"]), 0
        steps = split_steps(r["trajectory"])
        assert len(readings) == len(steps)
        for step, reading in zip(steps, readings):
            at = body.index(step, pos)
            pos = at + len(step)
            m = list(re.finditer(r"=\s*(-?\d+)", step))
            if not m:
                assert reading is None
                continue
            written = m[-1].group(1)
            head, tail = prompt + tok.encode(body[:at + m[-1].start(1)]), tok.encode(body[at + m[-1].start(1):])
            n = len(tok.encode(written)) + 1              # the result's tokens and the one after
            for k in range(n):
                nxt = generate_ref(lm, [head + tail[:k]], max_new_tokens=1, stop_ids=[])[0][0]
                if nxt != tail[k]:
                    want = re.match(r"\s*(-?\d+)", tok.decode(tail[:k] + [nxt]))
                    break
            else:
                want = re.match(r"\s*(-?\d+)", written)
            assert reading == (want.group(1) if want else None), step
            agree += reading == written
            differ += reading != written
    assert agree >= 10 and differ >= 2                # both: read as written, and a slip read anew
    assert got[-2][:3] == ["13", "7", None]           # the LM parts from 6 * 13 = 88 at its first digit
    assert got[-1] == ["13", "78"]                    # and from 6 * 13 = 7 after it: it writes 78
    monkeypatch.setattr("rfprm.prm_train.LOGIT_BUDGET", 1)   # one row a batch: a big vocabulary's batches
    assert lm_step_results(lm, tok, recs, batch_size=5, progress=False) == got
    prm = PRM.from_lm(lm, tok)
    examples = prm_examples(prm.tok, [slip], "rfprm", prm.max_len)
    add_marker_targets(prm.tok, examples, [{**slip, "marker_results": got[-2]}], None, "all")
    assert examples[0].marker_targets[:3] == [tok.encode("13"), tok.encode("7"), []]


def test_marker_targets_by_source(tmp_path):
    """marker_targets: marker_source "task" keeps the records and names the task's step_result;
    "model" attaches the whole reader's readings (read once: a rerun reads the file) and names
    none; a readings file of another length is refused in one line."""
    from dataclasses import replace
    from rfprm import world
    from rfprm.errors import RfprmError
    from rfprm.prm_recipe import PRESETS, marker_targets
    from rfprm.prm_train import lm_step_results
    recs = world.make_traces(6, 3)
    r = PRESETS["world"]
    assert r.marker_aux > 0 and r.marker_source == "model"             # the default needs no oracle
    same, target = marker_targets(recs, replace(r, marker_source="task"), world.step_result, "tiny-policy",
                                  tmp_path)
    assert same is recs and target is world.step_result
    off, target = marker_targets(recs, replace(r, marker_aux=0.0, marker_source="model"), world.step_result,
                                 "tiny-policy", tmp_path)
    assert off is recs and not (tmp_path / "marker_results_train.json").exists()
    model = replace(r, marker_source="model")
    got, target = marker_targets(recs, model, world.step_result, "tiny-policy", tmp_path)
    want = lm_step_results(rfprm.load_model("tiny-policy"), rfprm.load_tokenizer("tiny-policy"), recs,
                           progress=False)
    assert target is None and [x["marker_results"] for x in got] == want
    assert [{k: v for k, v in x.items() if k != "marker_results"} for x in got] == recs
    (tmp_path / "marker_results_train.json").write_text(json.dumps([["1"]] * len(recs)))
    again, _ = marker_targets(recs, model, world.step_result, "tiny-policy", tmp_path, resume=True)
    assert [x["marker_results"] for x in again] == [["1"]] * len(recs)      # read from the file
    with pytest.raises(RfprmError, match="6 readings for 5 training traces"):
        marker_targets(recs[:5], model, world.step_result, "tiny-policy", tmp_path, resume=True)
