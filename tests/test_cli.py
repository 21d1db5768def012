"""rfprm.cli: presets changed by --set, typed by their fields; the shared checks."""
import pytest

from rfprm import cli
from rfprm.errors import RfprmError
from rfprm.prm_recipe import PRESETS, PRMRecipe, check_recipe, quick


def test_apply_sets_converts_by_field_type_and_copies():
    base = PRESETS["world"]
    new, changed = cli.apply_sets(base, ["steps=7,lr=5e-4", "compile=no", "first_stage_targets=none",
                                         "marker-tokens=all"])
    assert (new.steps, new.lr, new.compile, new.first_stage_targets, new.marker_tokens) == (7, 5e-4, False, None, "all")
    assert changed == {"steps", "lr", "compile", "first_stage_targets", "marker_tokens"}
    assert base.steps == 2000 and base.compile is True                  # the table's preset is untouched
    assert cli.apply_sets(base, []) == (base, set())


@pytest.mark.parametrize("pair, message", [
    ("steps=1.5", "--set steps=1.5: expected int"),
    ("compile=maybe", "--set compile=maybe: expected bool"),
    ("steps", "expected FIELD=VALUE"),
    ("nope=1", "FIELD one of n_train"),
    ("lr=none", "--set lr=none: expected float"),                          # only X | None fields take none
])
def test_apply_sets_bad_input(pair, message):
    with pytest.raises(RfprmError, match=message.replace("(", r"\(").replace("|", r"\|")):
        cli.apply_sets(PRMRecipe(), [pair])


def test_recipe_checks_and_quick():
    assert check_recipe(PRMRecipe(second_stage_steps=0)).first_stage_targets == "fused"   # one stage: fused
    with pytest.raises(RfprmError, match="bucket must be >= 1"):
        check_recipe(PRMRecipe(bucket=0))
    q = quick(PRESETS["world"])
    assert (q.steps, q.n_train, q.compile, q.second_stage_steps, q.prm_layers) == (8, 48, False, 4, 4)


def test_world_long_is_the_world_recipe_trained_four_times_as_long():
    from dataclasses import asdict
    world, long = asdict(PRESETS["world"]), asdict(PRESETS["world-long"])
    assert {k for k in world if world[k] != long[k]} == {"batch_size", "steps"}
    assert long["batch_size"] * long["steps"] == 4 * world["batch_size"] * world["steps"]
    assert check_recipe(PRESETS["world-long"]) == PRESETS["world-long"]


def test_shared_checks():
    cli.at_least(None, 1, "--k")                       # not given: nothing to check
    with pytest.raises(RfprmError, match="--k must be >= 1, got 0"):
        cli.at_least(0, 1, "--k")
    with pytest.raises(RfprmError, match="lr must be a positive number"):
        cli.finite(0.0, "lr", positive=True)
    with pytest.raises(RfprmError, match="--alpha must be a finite number"):
        cli.finite(float("nan"), "--alpha")


def test_check_output(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RfprmError, match="is a file, not a directory"):
        cli.check_output(tmp_path / "afile" / "o.jsonl", "--out")
    with pytest.raises(RfprmError, match="it is a directory"):
        cli.check_output(tmp_path, "--out")
    assert cli.check_output(tmp_path / "new" / "o.jsonl", "--out") == tmp_path / "new" / "o.jsonl"
