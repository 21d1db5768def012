"""train_prm.py end to end in miniature, the evaluation metrics, and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rfprm
from rfprm.evaluate import auc, choose_threshold, first_below, processbench_f1, step_auc

ROOT = Path(__file__).resolve().parents[1]


def test_processbench_f1_by_hand():
    r = processbench_f1(predicted=[1, 2, -1, -1, 0], truth=[1, 0, -1, -1, -1])
    assert r["flawed_acc"] == 50.0 and r["flawless_acc"] == pytest.approx(200 / 3)
    assert r["f1"] == pytest.approx(2 * 50 * (200 / 3) / (50 + 200 / 3))
    assert first_below([0.9, 0.4, 0.1], 0.5) == 1 and first_below([0.9], 0.5) == -1


def test_auc_counts_pairs_and_half_ties():
    assert auc([0.9, 0.8], [0.1]) == 1.0 and auc([0.1], [0.9, 0.8]) == 0.0
    assert auc([0.5], [0.5]) == 0.5
    # pairs: (0.6 > 0.4) win, (0.6 = 0.6) half, (0.3 < 0.4), (0.3 < 0.6): 1.5 of 4
    assert auc([0.6, 0.3], [0.4, 0.6]) == 0.375
    assert auc([], [0.1]) != auc([], [0.1])          # nan when a side is empty


def test_step_auc_and_threshold():
    scores = [[0.9, 0.8, 0.2], [0.7, 0.6], [0.95, 0.3, 0.9]]
    errors = [2, -1, 1]
    assert step_auc(scores, errors) == 1.0           # every sound step above every first error
    th = choose_threshold(scores, errors)
    assert 0.3 < th < 0.6                            # separates the errors from the sound steps
    assert processbench_f1([first_below(s, th) for s in scores], errors)["f1"] == 100.0
    assert step_auc([[0.2, 0.9]], [1]) == 0.0


def test_train_prm_quick_end_to_end(quick_policy, tmp_path):
    out, work = tmp_path / "prm", tmp_path / "work"
    res = subprocess.run([sys.executable, "train_prm.py", "--quick", "--model", str(quick_policy),
                          "--out", str(out), "--work", str(work), "--json", str(tmp_path / "r.json"),
                          "--variants", "reasonflux,step-only,outcome",
                          "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    bars = res.stderr.replace("\r", "\n").splitlines()   # the marker auxiliary: first stage only, never the outcome RM
    assert any("stage 1" in line and "marker=" in line for line in bars)
    assert not any(line.startswith(("outcome", "reasonflux stage 2")) and "marker=" in line for line in bars)
    table = json.loads((tmp_path / "r.json").read_text())["results"]
    assert set(table) == {"reasonflux", "step-only", "outcome"}
    for r in table.values():
        assert 0 <= r["f1"] <= 100 and 0 <= r["threshold"] <= 1
    prm = rfprm.load_prm(out)
    assert prm.threshold == pytest.approx(table["reasonflux"]["threshold"])
    labels = [json.loads(line) for line in (work / "labels_train.jsonl").read_text().splitlines()]
    assert all("teacher" not in r and "first_error" not in r for r in labels)  # hidden from scorers
    assert all(len(r["step_rewards"]) == len(r["trajectory"].split("\n\n")) for r in labels)
    s = prm.score("Compute 3 + 4 * 2.", "First, 4 * 2 = 8.\n\nThen 3 + 8 = 11.",
                  "4 * 2 gives 8.\n\n3 + 8 gives 11, so the answer is \\boxed{11}")
    assert len(s.steps) == 2 and 0 <= s.trajectory <= 1
    # the default two stages: stage 1 on the verdicts, shared by reasonflux and the step-only
    # ablation; each then trains its own head-only second stage (λ_final 0.25 and 0)
    first = rfprm.load_prm(work / "run_0" / "stage1").state_dict()
    ablation = rfprm.load_prm(work / "baseline_1").state_dict()
    main = prm.state_dict()
    assert not (work / "run_1" / "stage1").exists()
    for other in (ablation, main):
        assert all(torch.equal(first[k], other[k]) for k in first if not k.startswith("step_head."))
        assert not torch.equal(first["step_head.2.weight"], other["step_head.2.weight"])
    assert not torch.equal(ablation["step_head.2.weight"], main["step_head.2.weight"])
    # --resume of a finished run trains nothing again and ends with the same PRM
    res = subprocess.run([sys.executable, "train_prm.py", "--quick", "--model", str(quick_policy),
                          "--out", str(out), "--work", str(work), "--resume", "--set", "eval_every=0",
                          "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    again = rfprm.load_prm(out).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in prm.state_dict().items())
    # the labels' parts are chosen separately: an LM encoder changes alignment, the oracle judge
    # quality, on the same traces
    work2 = tmp_path / "work2"
    res = subprocess.run([sys.executable, "train_prm.py", "--quick", "--model", str(quick_policy),
                          "--out", str(tmp_path / "prm2"), "--work", str(work2), "--threads", "1",
                          "--set", f"encoder={quick_policy},world_judge=oracle,steps=2,eval_every=0,second_stage_steps=1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    other = [json.loads(line) for line in (work2 / "labels_train.jsonl").read_text().splitlines()]
    assert [r["trajectory"] for r in other] == [r["trajectory"] for r in labels]
    parts = lambda rs, k: [x for r in rs for x in r["label_parts"][k]]
    assert parts(other, "alignment") != parts(labels, "alignment")
    assert parts(other, "quality") != parts(labels, "quality")


def test_first_stage_targets_and_the_fused_recipe(quick_policy, tmp_path):
    """first_stage_records swaps in the judge's verdicts; with --first-stage-targets fused (the
    recipe of the shipped tiny-prm) the step-only ablation *is* the reasonflux first stage, and
    a full second stage moves the backbone too."""
    from rfprm.prm_recipe import first_stage_records
    labelled = [{"step_rewards": [0.7, 0.3], "label_parts": {"quality": [1.0, 0.0]}, "x": 1}]
    assert first_stage_records(labelled, "quality")[0]["step_rewards"] == [1.0, 0.0]
    assert first_stage_records(labelled, "fused") is labelled
    with pytest.raises(rfprm.RfprmError, match="label_parts.quality"):
        first_stage_records([{"step_rewards": [0.7]}], "quality")
    out, work = tmp_path / "prm", tmp_path / "work"
    res = subprocess.run([sys.executable, "train_prm.py", "--quick", "--model", str(quick_policy),
                          "--out", str(out), "--work", str(work), "--set", "first_stage_targets=fused",
                          "--set", "second_stage_head_only=false", "--variants", "reasonflux,step-only",
                          "--set", "eval_every=0", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "stage 1 (step loss" in res.stderr
    first = rfprm.load_prm(work / "run_0" / "stage1").state_dict()
    ablation = rfprm.load_prm(work / "baseline_1").state_dict()
    main = rfprm.load_prm(out).state_dict()
    assert all(torch.equal(first[k], ablation[k]) for k in first)
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(first[name], main[name]) and not torch.equal(first["step_head.2.weight"], main["step_head.2.weight"])


@pytest.mark.parametrize("flags,match", [
    (["--set", "steps=0"], "steps must be >= 1"),
    (["--seed", "-1"], "--seed"),
    (["--model", "/nonexistent"], "no such directory"),
    (["--resume"], "--resume needs"),
    (["--variants", "reasonflux,bogus"], "--variants"),
    (["--set", "rollout_traces=-2"], "rollout_traces"),
    (["--set", "eval_every=-1"], "eval_every"),
    (["--init-prm", "/nonexistent"], "no such directory"),
    (["--set", "second_stage_steps=-1"], "second_stage_steps must be >= 0"),
    (["--set", "second_stage_lr=0"], "second_stage_lr must be > 0"),
    (["--set", "first_stage_targets=quality,second_stage_steps=0"], "needs second_stage_steps"),
    (["--set", "prm_layers=-1"], "prm_layers must be >= 0"),
    (["--set", "prm_layers=99"], "prm_layers must be between 1 and the model's"),
    (["--set", "policy_problems=-1"], "policy_problems must be >= 0"),
    (["--set", "policy_problems=5,policy_samples=0"], "policy_samples must be >= 1"),
    (["--set", "policy_problems=5", "--data", "x.jsonl"], "built-in world only"),
    (["--set", "policy_problems=5,policy_repeat=0"], "policy_repeat must be >= 1"),
    (["--set", "policy_repeat=2"], "it needs policy_problems"),
    (["--set", "marker_aux=-1"], "marker_aux must be >= 0"),
    (["--set", "marker_source=oracle"], "marker_source must be one of task, model"),
    (["--set", "alpha=inf"], "alpha must be a finite number"),
    (["--set", "layout=bogus"], "layout must be one of"),
    (["--set", "steps=many"], "--set steps=many: expected int"),
    (["--set", "nonsense=1"], "--set nonsense=1: expected FIELD=VALUE"),
    (["--preset", "bogus"], "--preset"),
    (["--set", "tau=0"], "tau must be a finite number > 0"),
    (["--set", "fusion_temperature=nan"], "fusion_temperature must be"),
    (["--set", "n_negatives=0"], "n_negatives must be >= 1"),
    (["--set", "world_judge=gpt"], "world_judge must be noisy or oracle"),
    (["--set", "world_judge=oracle", "--data", "x.jsonl"], "with --data the judge is --judge"),
    (["--judge", "tiny-base"], "--judge and --expert label --data traces"),
    (["--expert", "tiny-base"], "--judge and --expert label --data traces"),
])
def test_bad_flags(flags, match, tmp_path):
    res = subprocess.run([sys.executable, "train_prm.py", *flags], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert match in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_bad_data_file_is_named(quick_policy, tmp_path):
    data = tmp_path / "traces.jsonl"
    data.write_text('{"problem": "Compute 1 + 2.", "trajectory": "1 + 2 = 3.", "response": "3"}\n'
                    '{"problem": "Compute 2 + 2.", "trajectory": "", "response": "4"}\n')
    res = subprocess.run([sys.executable, "train_prm.py", "--model", str(quick_policy), "--data", str(data),
                          "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and f"{data}:2" in res.stderr and "trajectory" in res.stderr
    assert not (tmp_path / "o").exists()


def test_bucketed_batches_are_pure_and_cover_each_group(quick_policy):
    from rfprm import world
    from rfprm.prm import PRM
    from rfprm.prm_train import bucketed_batches
    prm = PRM.from_lm(rfprm.load_model(quick_policy), rfprm.load_tokenizer(quick_policy))
    examples = prm.examples(world.make_traces(64, 0))
    sound = [i % 2 == 0 for i in range(len(examples))]
    batch_at = bucketed_batches(examples, sound, batch_size=4, seed=3, pad_id=0, bucket=4)
    a, sa = batch_at(5, 0)
    b, sb = batch_at(5, 0)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(sa, sb)      # pure
    # one group = 4 steps: their batches are the group's 16 draws sorted by length, cut in 4,
    # so the batches' length ranges do not overlap (the trajectory marker is a row's last token)
    spans = sorted((int(lens.min()), int(lens.max())) for lens in
                   (batch_at(s, 0)[0].trajectory_cols + 1 for s in range(4, 8)))
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
    assert len({batch_at(s, 0)[0].input_ids.shape[1] for s in range(4, 8)}) > 1
    # accumulation: micro-batches of one step are distinct draws
    acc = bucketed_batches(examples, sound, 4, 3, 0, grad_accum=2, bucket=4)
    assert torch.equal(acc(2, 1)[0].input_ids, batch_at(5, 0)[0].input_ids)
    with pytest.raises(rfprm.RfprmError):
        bucketed_batches([], [], 4, 0, 0)


def test_init_prm_starts_from_a_trained_prm(quick_policy, tmp_path):
    from rfprm import world
    from rfprm.prm_train import PRMTrainSpec, train_prm_model
    from rfprm.world.task import world_labeller
    lm, tok = rfprm.load_model(quick_policy), rfprm.load_tokenizer(quick_policy)
    recs = world_labeller(None)(world.make_traces(16, 0), progress=False)
    first = train_prm_model(lm, tok, recs, PRMTrainSpec(steps=3, batch_size=4, lr=1e-2, lm_aux=0, ckpt_every=0))
    first.save(tmp_path / "a")
    # a near-zero learning rate: the second stage must end where the first one left off
    second = train_prm_model(lm, tok, recs, PRMTrainSpec(steps=1, batch_size=4, lr=1e-12, lm_aux=0, ckpt_every=0),
                             init_prm=tmp_path / "a")
    fresh = train_prm_model(lm, tok, recs, PRMTrainSpec(steps=1, batch_size=4, lr=1e-12, lm_aux=0, ckpt_every=0))
    a, b, c = first.state_dict(), second.state_dict(), fresh.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.allclose(a["step_head.2.weight"], c["step_head.2.weight"])
    with pytest.raises(rfprm.RfprmError, match="init-prm"):
        train_prm_model(lm, tok, recs, PRMTrainSpec(steps=1, batch_size=4, lm_aux=0, ckpt_every=0),
                        init_prm=quick_policy)


@pytest.mark.parametrize("repeat", [1, 3])
def test_policy_samples_join_the_training_pool(quick_policy, tmp_path, monkeypatch, repeat):
    """--policy-problems: the policy's own parsed, distinct traces are labelled like the teacher
    traces and trained on (each --policy-repeat times), on problems none of the teacher splits
    or reserved ones use."""
    import train_prm
    from rfprm import labels, prm_recipe
    from rfprm.world.task import trace_splits
    calls = []

    def fake_complete(model, tok, prompts, num_samples=1, **options):   # sampling, then the rollouts
        calls.append((len(prompts), num_samples))
        good = "<think>\nFirst, 2 + 3 = 5.\n</think>\n\n2 + 3 gives 5, so the answer is \\boxed{5}"
        other = "<think>\nFirst, 2 + 3 = 6.\n</think>\n\n2 + 3 gives 6, so the answer is \\boxed{6}"
        return ([good, good, other, "no trace here \\boxed{5}"] * len(prompts) * num_samples)[:len(prompts) * num_samples]

    monkeypatch.setattr(labels, "chat_complete", fake_complete)   # the policy's samples and the rollouts
    pools = []
    real_train = prm_recipe.train_prm_model

    def spy_train(lm, tok, records, *a, **k):
        pools.append(records)
        return real_train(lm, tok, records, *a, **k)

    monkeypatch.setattr(prm_recipe, "train_prm_model", spy_train)
    work = tmp_path / "work"
    train_prm.main(["--quick", "--model", str(quick_policy), "--set", "policy_problems=3,policy_samples=4",
                    "--set", f"policy_repeat={repeat},marker_tokens=all,alpha=0.25",
                    "--out", str(tmp_path / "prm"), "--work", str(work), "--set", "eval_every=0", "--threads", "1"])
    assert (3, 4) in calls                                 # 3 fresh problems, 4 samples each
    own = [json.loads(line) for line in (work / "labels_policy.jsonl").read_text().splitlines()]
    assert len(own) == 6                                   # 2 distinct parsed traces x 3 problems
    assert all(len(r["step_rewards"]) == 1 for r in own)
    quick = train_prm.parse_args(["--quick"]).recipe
    used = set(trace_splits((quick.n_train, quick.n_val, quick.n_test), 0)[1])
    assert not {r["problem"] for r in own} & used
    n_teacher = quick.n_train
    assert pools and all(len(p) == n_teacher + repeat * len(own) for p in pools)
    own_texts = sorted(r["trajectory"] + r["problem"] for r in own)
    assert sorted(r["trajectory"] + r["problem"] for r in pools[0][n_teacher:]) == sorted(own_texts * repeat)
    assert rfprm.load_prm(tmp_path / "prm").alpha == 0.25  # alpha is stored with the PRM (bon.py's default)


def test_keep_layers_cuts_the_backbone(quick_policy, tmp_path):
    from rfprm.checkpoint import load_model
    from rfprm.prm import PRM
    from rfprm.prm_train import keep_layers
    from rfprm.tokenizer import load_tokenizer
    full, cut = load_model(quick_policy), keep_layers(load_model(quick_policy), 1)
    assert len(cut.model.layers) == cut.cfg.num_hidden_layers == cut.model.cfg.num_hidden_layers == 1
    ids = torch.tensor([[3, 5, 7, 11]])
    with torch.no_grad():   # the cut model is the full one's first layer, then its final norm
        x = full.model.embed_tokens(ids)
        cos, sin = full.model.rope(torch.arange(4).expand(1, 4))
        from rfprm.model import build_mask
        x = full.model.layers[0](x, cos, sin, build_mask(4, 0, None, ids.device), None)
        assert torch.allclose(full.model.norm(x), cut.model(ids), atol=1e-6)
    prm = PRM.from_lm(cut, load_tokenizer(quick_policy))
    prm.save(tmp_path / "p")
    assert rfprm.load_prm(tmp_path / "p").cfg.num_hidden_layers == 1


def test_prelabelled_data_without_verdicts_trains_on_the_fused_rewards(quick_policy, tmp_path):
    """--data whose records carry step_rewards but no judge verdicts: the default first stage
    falls back to the fused rewards (said in one line) instead of failing."""
    from rfprm import world
    recs = world.make_traces(12, 5)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"problem": r["problem"], "trajectory": r["trajectory"],
                                        "response": r["response"],
                                        "step_rewards": [0.5] * len(r["trajectory"].split("\n\n"))}) + "\n"
                            for r in recs))
    res = subprocess.run([sys.executable, "train_prm.py", "--quick", "--model", str(quick_policy), "--data", str(data),
                          "--out", str(tmp_path / "o" / "prm"), "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "first stage on the fused step rewards" in res.stdout
    from rfprm.checkpoint import load_config
    # a --model other than tiny-policy keeps all its layers by default
    assert rfprm.load_prm(tmp_path / "o" / "prm").cfg.num_hidden_layers == load_config(quick_policy).num_hidden_layers


def test_late_verifier_note_only_under_80():
    from rfprm.prm_recipe import late_verifier_note
    low = {"reasonflux": {"f1": 75.7}, "outcome": {"f1": 20.0}}
    note = late_verifier_note(low, batch_size=32)
    assert note.startswith("note: held-out F1 75.7 is under 80") and "--set steps=N" in note
    assert "0.21 s each on two cores (batch 32)" in note
    assert late_verifier_note({"reasonflux": {"f1": 85.3}}) is None
    assert late_verifier_note({"step-only": {"f1": 50.0}}) is None
