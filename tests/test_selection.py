"""Offline data selection: each method on a hand-made pool, students, and select_data.py end to
end on miniature checkpoints (a random tiny base and a PRM built from it), including bad input."""
import json
import subprocess
import sys

import pytest
import torch

import rfprm
import select_data
from rfprm import world
from rfprm.bpe import train_bpe
from rfprm.config import preset
from rfprm.errors import RfprmError
from rfprm.model import Qwen2ForCausalLM, init_weights
from rfprm.prm import PRM, PRMScore
from rfprm.selection import (StudentSpec, compare, rank, select, select_outcome, select_random,
                             selection_score, student_accuracy, summarize, teacher_table, train_student)

from conftest import ROOT

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]


def trace(answer_right: bool, teacher="clean"):
    """A one-step trace of 2 + 3 whose final answer is right or wrong."""
    boxed = 5 if answer_right else 6
    return {"problem": "Compute 2 + 3.", "trajectory": f"First, 2 + 3 = {boxed}.",
            "response": f"2 + 3 gives {boxed}, so the answer is \\boxed{{{boxed}}}", "answer": "5",
            "teacher": teacher}


# (mean step, trajectory): the order flips between α = 0 and α = 1
HAND_SCORES = [PRMScore([0.9, 0.9], 0.1, 0.0), PRMScore([0.5], 0.9, 0.0),
               PRMScore([0.6, 0.8], 0.5, 0.0), PRMScore([0.2], 0.2, 0.0)]


# ----------------------------------------------------------------------------- the methods

def test_rank_uses_mean_step_plus_alpha_trajectory():
    assert selection_score(HAND_SCORES[0], 1.0) == pytest.approx(1.0)
    assert selection_score(HAND_SCORES[2], 0.5) == pytest.approx(0.7 + 0.25)
    assert selection_score(PRMScore([], 0.4, 0.4), 1.0) == 0.4           # scalar head: trajectory only
    assert rank(HAND_SCORES, 0.0) == [0, 2, 1, 3]                         # 0.9, 0.7, 0.5, 0.2
    assert rank(HAND_SCORES, 1.0) == [1, 2, 0, 3]                         # 1.4, 1.2, 1.0, 0.4
    assert rank([PRMScore([0.5], 0.5, 0.0)] * 3, 1.0) == [0, 1, 2]       # ties: pool order


def test_reasonflux_and_step_only_take_the_top_k():
    pool = [trace(True)] * 4
    assert select("reasonflux", pool, 2, scores=HAND_SCORES, alpha=1.0).indices == [1, 2]
    assert select("reasonflux", pool, 2, scores=HAND_SCORES, alpha=0.0).indices == [0, 2]
    assert select("step_only", pool, 2, scores=HAND_SCORES, alpha=1.0).indices == [0, 2]  # α ignored
    other = list(reversed(HAND_SCORES))   # a separate step-only PRM's scores feed step_only only
    assert select("step_only", pool, 1, scores=HAND_SCORES, step_scores=other).indices == [3]
    assert select("reasonflux", pool, 1, scores=HAND_SCORES, step_scores=other).indices == [1]
    with pytest.raises(RfprmError, match="one PRM score per pool trace"):
        select("reasonflux", pool, 2, scores=HAND_SCORES[:3])
    with pytest.raises(RfprmError, match="scalar head"):
        select("step_only", pool, 1, scores=[PRMScore([], 0.5, 0.5)] * 4)


def test_random_is_seeded():
    a, b = select_random(100, 10, seed=1), select_random(100, 10, seed=1)
    assert a.indices == b.indices and len(set(a.indices)) == 10 and all(0 <= i < 100 for i in a.indices)
    assert select_random(100, 10, seed=2).indices != a.indices
    assert sorted(select_random(5, 5, seed=0).indices) == list(range(5))


def test_outcome_filter_keeps_right_answers():
    pool = [trace(i % 3 == 0) for i in range(30)]               # 10 right: 0, 3, 6, ...
    chosen = select_outcome(pool, 4, seed=0)
    assert len(set(chosen.indices)) == 4 and all(i % 3 == 0 for i in chosen.indices) and not chosen.note
    assert select_outcome(pool, 4, seed=0).indices == chosen.indices
    assert select_outcome(pool, 4, seed=1).indices != chosen.indices
    short = select_outcome(pool, 15, seed=0)                     # fewer pass than k: fill and say so
    assert len(set(short.indices)) == 15 and {i for i in range(30) if i % 3 == 0} <= set(short.indices)
    assert "only 10 of 30" in short.note and "5 random others" in short.note
    with pytest.raises(RfprmError, match="needs an 'answer'"):
        select_outcome([{k: v for k, v in trace(True).items() if k != "answer"}] * 3, 1, 0)


def test_bad_k_and_method():
    pool = [trace(True)] * 3
    for k in (0, 4):
        with pytest.raises(RfprmError, match="pool of 3"):
            select("random", pool, k)
    with pytest.raises(RfprmError, match="empty"):
        select("random", [], 1)
    with pytest.raises(RfprmError, match="unknown selection method"):
        select("best", pool, 1)


def test_teacher_table_and_summaries():
    pool = [trace(True, "clean"), trace(False, "sloppy"), trace(True, "lucky")]
    table = teacher_table(pool, {"a": [0, 2], "b": [1]}, tuple(world.DEFAULT_MIX))   # the world's order
    assert table["a"]["clean"] == 1 and table["a"]["lucky"] == 1 and table["a"]["sloppy"] == 0
    assert list(table["b"]) == list(world.DEFAULT_MIX)
    plain = teacher_table(pool, {"a": [0, 2], "b": [1]})     # no task's list: the pool's teachers, sorted
    assert plain == {"a": {"clean": 1, "lucky": 1}, "b": {"sloppy": 1}}
    s = summarize([0.2, 0.4])
    assert s["mean"] == pytest.approx(0.3) and s["std"] == pytest.approx(0.1414, abs=1e-3)
    assert summarize([0.5])["std"] == 0.0
    assert compare(summarize([0.5, 0.6]), summarize([0.2, 0.21]))["beyond_spread"] is True
    assert compare(summarize([0.3, 0.5]), summarize([0.2, 0.4]))["beyond_spread"] is False
    assert compare(summarize([0.5]), summarize([0.2]))["beyond_spread"] is None


# ----------------------------------------------------------------------------- miniature checkpoints

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A random tiny base (hidden 32) with the world's kind of tokenizer, and an untrained PRM
    built from it: shapes and formats of the shipped ones, numbers meaningless."""
    root = tmp_path_factory.mktemp("select_ckpts")
    tok = train_bpe(world.world_corpus(400, 0), 300, SPECIALS)
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 eos_token_id=[tok.im_end_id, tok.eos_id])
    lm = Qwen2ForCausalLM(cfg)
    init_weights(lm)
    rfprm.save_model(lm, root / "base")
    tok.save(root / "base")
    PRM.from_lm(lm, tok).save(root / "prm")
    return root


def test_student_is_a_trained_copy(ckpts):
    base, tok = rfprm.load_model(ckpts / "base"), rfprm.load_tokenizer(ckpts / "base")
    before = {n: t.clone() for n, t in base.state_dict().items()}
    pool = world.make_traces(8, 0)
    spec = StudentSpec(steps=3, batch_size=4, max_new_tokens=8)
    student = train_student(base, tok, pool, spec, seed=0)
    assert all(torch.equal(before[n], t) for n, t in base.state_dict().items())   # base untouched
    assert not torch.equal(student.model.embed_tokens.weight, base.model.embed_tokens.weight)
    problems = [("Compute 2 + 3.", "5"), ("Compute 4 * 2.", "8")]
    acc = student_accuracy(base, tok, pool, problems, spec, seed=0)
    assert 0.0 <= acc <= 1.0


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "select_data.py"), "--threads", "1", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_quick_end_to_end(ckpts, tmp_path):
    out, js = tmp_path / "top.jsonl", tmp_path / "res" / "table.json"
    res = run_script("--quick", "--sft", "--prm", str(ckpts / "prm"), "--model", str(ckpts / "base"),
                     "--out", str(out), "--json", str(js), "--set", "max_new_tokens=24",
                     "--alpha-sweep", "0.5,1.0", "--baseline-prm", f"same={ckpts / 'prm'}")
    assert res.returncode == 0, res.stderr[-2000:]
    top = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(top) == 12                                             # --quick: k = 12 of 48
    totals = [r["prm_total"] for r in top]
    assert totals == sorted(totals, reverse=True)
    assert totals[0] == pytest.approx(sum(top[0]["prm_steps"]) / len(top[0]["prm_steps"])
                                      + top[0]["prm_trajectory"], abs=1e-6)   # α = 1.0, the default
    assert len({r["problem"] for r in top}) == 12
    table = json.loads(js.read_text())
    assert list(table["accuracy"]) == ["random", "outcome", "step_only", "reasonflux", "same"]
    # a baseline ranks by its mean step score: the same PRM as a baseline picks what step_only picks
    assert table["per_seed"]["same"] == table["per_seed"]["step_only"]
    assert "beyond_spread" in table["reasonflux_vs_same"]
    assert all(0.0 <= v <= 1.0 for v in table["accuracy"].values())
    assert all(len(v) == 2 for v in table["per_seed"].values())       # --quick: 2 seeds
    assert set(table["alpha_sweep"]) == {"0.5", "1"}
    assert table["alpha_sweep"]["1"] == {"mean": table["accuracy"]["reasonflux"],
                                         "std": table["std"]["reasonflux"],
                                         "per_seed": table["per_seed"]["reasonflux"]}
    assert "beyond_spread" in table["reasonflux_vs_random"]
    assert sum(table["picks"]["whole pool"].values()) == 48
    assert "students: held-out accuracy" in res.stdout and "ReasonFlux - random" in res.stdout
    assert "ReasonFlux - same" in res.stdout
    picks = res.stdout.split("students: held-out")[0]     # the picks table names the baseline's picks too
    assert any(line.lstrip().startswith("same ") for line in picks.splitlines()), picks


def test_data_pool_and_selection_only(ckpts, tmp_path):
    pool = tmp_path / "pool.jsonl"
    records = world.make_traces(10, 5)
    pool.write_text("".join(json.dumps({"question": r["problem"], "trajectory": r["trajectory"],
                                        "response": r["response"]}) + "\n" for r in records))
    out = tmp_path / "top.jsonl"
    select_data.main(["--data", str(pool), "--fields", "problem=question", "--k", "3", "--alpha", "0.5",
                      "--prm", str(ckpts / "prm"), "--out", str(out), "--threads", "1"])
    top = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(top) == 3 and all("teacher" not in r and "problem" in r for r in top)
    s = top[0]
    assert s["prm_total"] == pytest.approx(sum(s["prm_steps"]) / len(s["prm_steps"]) + 0.5 * s["prm_trajectory"])


def test_default_alpha_is_the_papers_not_the_prms(ckpts, tmp_path):
    """A PRM's own α is bon.py's (tiny-prm stores the one its recipe chose for Best-of-N); selection ranks
    with α = 1.0."""
    prm = rfprm.load_prm(ckpts / "prm")
    prm.alpha = 0.2
    prm.save(tmp_path / "prm")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({k: r[k] for k in ("problem", "trajectory", "response")}) + "\n"
                            for r in world.make_traces(6, 2)))
    out = tmp_path / "top.jsonl"
    select_data.main(["--data", str(pool), "--k", "2", "--prm", str(tmp_path / "prm"), "--out", str(out),
                      "--threads", "1"])
    s = json.loads(out.read_text().splitlines()[0])
    assert s["prm_total"] == pytest.approx(sum(s["prm_steps"]) / len(s["prm_steps"]) + s["prm_trajectory"])


@pytest.mark.parametrize("flag", ["--model", "--base"])
def test_model_without_sft_says_what_to_do(ckpts, tmp_path, flag):
    """The base model trains the students only: given without --sft it is an error, not ignored."""
    out = tmp_path / "top.jsonl"
    res = run_script(flag, str(ckpts / "base"), "--prm", str(ckpts / "prm"), "--out", str(out))
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
    assert "used only with --sft" in res.stderr and "add --sft" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("case", ["empty", "k_too_big", "unwritable", "bad_sweep", "outcome_no_answer",
                                  "baseline_taken", "baseline_missing"])
def test_bad_input_exits_2_without_output(ckpts, tmp_path, case):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in world.make_traces(5, 1)))
    out = tmp_path / "top.jsonl"
    args = ["--prm", str(ckpts / "prm"), "--out", str(out)]
    if case == "empty":
        pool.write_text("\n")
        args += ["--data", str(pool), "--k", "1"]
    elif case == "k_too_big":
        args += ["--data", str(pool), "--k", "10"]
    elif case == "unwritable":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "top.jsonl"
        args += ["--data", str(pool), "--k", "2", "--out", str(out)]
    elif case == "bad_sweep":
        args += ["--data", str(pool), "--k", "2", "--sft", "--model", str(ckpts / "base"), "--alpha-sweep", "0.5,lots"]
    elif case == "outcome_no_answer":
        pool.write_text("".join(json.dumps({k: r[k] for k in ("problem", "trajectory", "response")}) + "\n"
                                for r in world.make_traces(5, 1)))
        args += ["--data", str(pool), "--k", "2", "--sft", "--model", str(ckpts / "base")]
    else:   # a baseline reward model: a taken name, a directory that is not there
        where = tmp_path / "nothing" if case == "baseline_missing" else ckpts / "prm"
        args += ["--data", str(pool), "--k", "2", "--sft", "--model", str(ckpts / "base"),
                 "--baseline-prm", f"{'step_only' if case == 'baseline_taken' else 'resp'}={where}"]
    if case in ("empty", "k_too_big", "baseline_taken"):   # through the real command line once each
        res = run_script(*args)
        assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert {"empty": "no records", "k_too_big": "larger than the pool",
                "baseline_taken": "is taken"}[case] in res.stderr
    else:
        with pytest.raises(RfprmError):
            select_data.main(args)
    assert not out.exists() and not list(tmp_path.glob(".top.jsonl*"))


def test_student_table_says_which_way_a_gap_goes():
    """ReasonFlux against random and each baseline: ahead beyond the spread, inside it, or the
    other method ahead beyond it (a gap below zero is not just 'not beyond')."""
    from rfprm.selection import format_students, result_table, summarize
    results = {"random": summarize([0.12, 0.11, 0.14]), "reasonflux": summarize([0.07, 0.08, 0.085]),
               "resp": summarize([0.02, 0.035, 0.005]), "orm": summarize([0.20, 0.05, 0.09])}
    text = format_students(results, {}, 3, 200, 1.0)
    assert "ReasonFlux - random: -4.5 points" in text and "random ahead beyond the seed spread" in text
    assert "ReasonFlux - resp: +5.8 points; seed spread (std + std) 2.3: beyond the seed spread" in text
    assert "ReasonFlux - orm: -3.5 points" in text and "not beyond the seed spread" in text and "orm ahead" not in text
    rows = [line.split()[0] for line in text.splitlines()[3:7]]
    assert rows == ["random", "ReasonFlux", "resp", "orm"]      # the methods first, then the baselines
    table = result_table(results, {}, alpha=1.0, alpha_sweep=[], k=10, n_pool=40, n_problems=200, seeds=[0, 1, 2],
                         picks={})
    assert list(table["accuracy"]) == ["random", "reasonflux", "resp", "orm"]
    assert table["reasonflux_vs_resp"]["beyond_spread"] is True and table["reasonflux_vs_orm"]["beyond_spread"] is False
