"""The PRM recipe's variants: the response-only PRM's records and every variant's stage plan."""
from dataclasses import replace

import pytest

from rfprm import world
from rfprm.errors import RfprmError
from rfprm.prm_recipe import (PRMRecipe, check_recipe, first_stage_records, parse_variants, response_only_records,
                              stage_plan, train_variants)
from rfprm.prm_train import PRMTrainSpec
from rfprm.steps import split_steps
from rfprm.world.task import world_labeller


@pytest.fixture(scope="module")
def labelled():
    return world_labeller()(world.make_traces(60, seed=2), progress=False)


def test_response_only_records_score_the_response_steps(labelled):
    out = response_only_records(labelled)
    for r, o in zip(labelled, out):
        response = split_steps(r["response"])
        assert split_steps(o["trajectory"]) == response and o["response"] == r["response"]
        assert len(o["step_rewards"]) == len(response)
        assert "trajectory_reward" not in o and "label_parts" not in o
        assert set(o["step_rewards"]) <= set(r["step_rewards"])       # labels moved, not made up
        if len(split_steps(r["trajectory"])) == len(response):       # one to one: the same labels
            assert o["step_rewards"] == r["step_rewards"]
    wander = next(o for r, o in zip(labelled, out) if r["teacher"] == "wandering")
    assert len(wander["step_rewards"]) < len(split_steps(next(
        r for r in labelled if r["teacher"] == "wandering")["trajectory"]))
    with pytest.raises(RfprmError, match="response-only: training record 0"):
        response_only_records([{**labelled[0], "step_rewards": [0.5] * 9}])


def test_response_only_records_move_the_marker_readings_with_the_labels(labelled):
    read = [{**r, "marker_results": [f"{i}:{t}" for t in range(len(split_steps(r["trajectory"])))]}
            for i, r in enumerate(labelled)]
    out = response_only_records(read)
    assert all("marker_results" not in o for o in response_only_records(labelled))   # none given: none made
    for i, (r, o) in enumerate(zip(read, out)):
        assert len(o["marker_results"]) == len(split_steps(o["trajectory"]))
        assert set(o["marker_results"]) <= set(r["marker_results"])
        if len(split_steps(r["trajectory"])) == len(split_steps(r["response"])):   # one to one: the same
            assert o["marker_results"] == r["marker_results"]
    short = {**read[0], "marker_results": []}                    # a reading list shorter than the steps
    assert set(response_only_records([short])[0]["marker_results"]) == {None}


def test_every_variant_has_the_same_stages_and_steps(labelled):
    assert parse_variants("reasonflux,response-only") == ["reasonflux", "response-only"]
    r = PRMRecipe(steps=50, second_stage_steps=10, first_stage_targets="fused")
    spec = PRMTrainSpec(steps=r.steps, lambda_final=r.lambda_final)
    main = stage_plan("reasonflux", r, labelled, labelled, spec, world.is_correct)
    resp = stage_plan("response-only", r, labelled, labelled, spec, world.is_correct)
    assert [s.steps for _, s, _ in resp] == [s.steps for _, s, _ in main] == [50, 10]
    assert all(s.lambda_final == 0 for _, s, _ in resp) and main[-1][1].lambda_final == r.lambda_final
    assert not any(shared for _, _, shared in resp)               # never reuses reasonflux's first stage
    assert resp[0][0][0]["trajectory"] == labelled[0]["response"]


def test_a_joint_second_stage_on_the_traces_with_a_trajectory_reward(labelled):
    some = [dict(r) for r in labelled]
    for r in some[::2]:
        r.pop("trajectory_reward", None)
    for r in some[1::2]:
        r["trajectory_reward"] = 0.5
    r = PRMRecipe(steps=50, second_stage_steps=10, first_stage_targets="quality", second_stage_head_only=False,
                  second_stage_traces="trajectory", second_stage_marker=True, marker_aux=0.5)
    spec = PRMTrainSpec(steps=r.steps, lambda_final=1.0)
    for variant in ("reasonflux", "step-only"):   # the ablation trains on the same traces, λ_final = 0
        (first, s1, _), (second, s2, _) = stage_plan(variant, r, some, some, spec, world.is_correct)
        assert first is some and second == some[1::2]
        assert s1.marker_aux == s2.marker_aux == 0.5 and not s2.freeze_backbone
        assert s2.lambda_final == (1.0 if variant == "reasonflux" else 0.0)
    plain = PRMRecipe(steps=50, second_stage_steps=10, first_stage_targets="fused", marker_aux=0.5)
    (_, _, _), (second, s2, _) = stage_plan("reasonflux", plain, some, some, spec, world.is_correct)
    assert second is some and s2.marker_aux == 0 and s2.freeze_backbone   # the defaults: all traces, head only
    none = [{k: v for k, v in x.items() if k != "trajectory_reward"} for x in some]
    with pytest.raises(RfprmError, match="no training trace carries a trajectory reward"):
        stage_plan("reasonflux", r, none, none, spec, world.is_correct)
    with pytest.raises(RfprmError, match="needs rollout_traces >= 1"):
        check_recipe(PRMRecipe(second_stage_traces="trajectory", rollout_traces=0))
    with pytest.raises(RfprmError, match="needs second_stage_head_only=false"):
        check_recipe(PRMRecipe(second_stage_marker=True))
    with pytest.raises(RfprmError, match="second_stage_traces must be one of all, trajectory"):
        check_recipe(PRMRecipe(second_stage_traces="some"))


def test_a_second_stage_on_the_verdicts(labelled, tmp_path):
    r = PRMRecipe(steps=50, second_stage_steps=10, first_stage_targets="quality", second_stage_head_only=False,
                  second_stage_traces="trajectory", second_stage_targets="quality")
    spec = PRMTrainSpec(steps=r.steps, lambda_final=1.0)
    labelled = [{k: v for k, v in x.items() if k != "trajectory_reward"} for x in labelled]
    for x in labelled[1::2]:
        x["trajectory_reward"] = 0.5
    with_traj = labelled[1::2]
    assert any(x["step_rewards"] != x["label_parts"]["quality"] for x in with_traj)
    verdicts = first_stage_records(labelled, "quality")
    (first, _, _), (second, s2, _) = stage_plan("reasonflux", r, labelled, verdicts, spec, world.is_correct)
    assert first is verdicts and len(second) == len(with_traj) and s2.lambda_final == 1.0 and not s2.freeze_backbone
    for x, y in zip(second, with_traj):       # the verdicts as targets; the trajectory reward kept
        assert x["step_rewards"] == [float(q) for q in y["label_parts"]["quality"]]
        assert x["trajectory_reward"] == y["trajectory_reward"] and x["trajectory"] == y["trajectory"]
    resp = stage_plan("response-only", r, labelled, verdicts, spec, world.is_correct)
    assert resp[1][0] == response_only_records(verdicts) != response_only_records(labelled)   # response-only too
    no_verdicts = [{k: v for k, v in x.items() if k != "label_parts"} for x in labelled]
    with pytest.raises(RfprmError, match="the training labels carry no judge's verdicts"):
        train_variants(None, None, no_verdicts, check_recipe(replace(r, first_stage_targets=None)), ["reasonflux"],
                       tmp_path, out=tmp_path / "prm", val=[], test=[])
    with pytest.raises(RfprmError, match="second_stage_targets=quality trains a second stage"):
        check_recipe(PRMRecipe(second_stage_targets="quality", first_stage_targets="fused"))
    with pytest.raises(RfprmError, match="second_stage_targets must be one of fused, quality"):
        check_recipe(PRMRecipe(second_stage_targets="verdicts"))
