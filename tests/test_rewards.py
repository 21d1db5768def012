"""rfprm.rewards: the TRL reward function and verl's compute_score on the tiny PRM; one real
GRPOTrainer step with the adapter when trl is installed."""
import importlib.util
import warnings

import pytest

from rfprm import rewards
from rfprm.errors import RfprmError
from rfprm.errors import resolve_path
from rfprm.prm import load_prm
from rfprm.rewards import PRMReward, make_compute_score, rollout_trace

PROBLEM = "Compute 6 * 4 + 3."
RIGHT = "<think>\n6 * 4 = 24.\n\n24 + 3 = 27.\n</think>\n\nSo the answer is \\boxed{27}."
WRONG = "<think>\n6 * 4 = 25.\n\n25 + 3 = 28.\n</think>\n\nSo the answer is \\boxed{28}."
PLAIN = "6 * 4 = 24.\n\n24 + 3 = 27, so \\boxed{27}"          # no think tags


@pytest.fixture(scope="module")
def prm():
    return load_prm("tiny-prm")


def expected(prm, text, rule, beta, which="trajectory"):
    s = prm.score(**rollout_trace(PROBLEM, text))
    value = {"trajectory": s.trajectory, "min": min(s.steps), "mean": sum(s.steps) / len(s.steps)}[which]
    return (1 - beta) * rule + beta * value


def test_trl_signature_mixes_rule_and_prm(prm):
    reward = PRMReward(prm, beta=0.75)
    out = reward(prompts=[PROBLEM] * 3, completions=[RIGHT, WRONG, PLAIN], completion_ids=[[1]] * 3,
                 answer=["27", "27", "27"], trainer_state=None)
    assert out == pytest.approx([expected(prm, RIGHT, 1, 0.75), expected(prm, WRONG, 0, 0.75),
                                 expected(prm, PLAIN, 1, 0.75)], abs=1e-6)
    assert rollout_trace(PROBLEM, PLAIN) == {"problem": PROBLEM, "trajectory": PLAIN,
                                             "response": "24 + 3 = 27, so \\boxed{27}"}
    mins = PRMReward(prm, beta=0.5, prm_reward="min")([PROBLEM], [RIGHT], answer=["27"])
    assert mins == pytest.approx([expected(prm, RIGHT, 1, 0.5, "min")], abs=1e-6)


def test_conversational_inputs_give_the_same_rewards(prm):
    reward = PRMReward(prm, beta=0.75)
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROBLEM}]] * 2
    completions = [[{"role": "assistant", "content": RIGHT}], [{"role": "assistant", "content": WRONG}]]
    assert reward(prompts, completions, answer=["27", "27"]) == \
        pytest.approx(reward([PROBLEM] * 2, [RIGHT, WRONG], answer=["27", "27"]), abs=1e-7)


def test_beta_ends(prm):
    assert PRMReward(prm, beta=0.0)([PROBLEM] * 2, [RIGHT, WRONG], answer=[27, 27]) == [1.0, 0.0]
    only_prm = PRMReward(prm, beta=1.0)([PROBLEM], [RIGHT])            # no answer column needed
    assert only_prm == pytest.approx([prm.score(**rollout_trace(PROBLEM, RIGHT)).trajectory], abs=1e-6)
    with pytest.raises(RfprmError, match="no 'answer' column"):
        PRMReward(prm, beta=0.5)([PROBLEM], [RIGHT])
    with pytest.raises(RfprmError, match="0 <= beta <= 1"):
        PRMReward(prm, beta=1.5)


def test_unreadable_rollout_gets_zero_prm_reward_and_a_warning(prm):
    too_long = "<think>\n" + "\n\n".join(["1 + 1 = 2."] * 400) + "\n</think>\n\n\\boxed{2}"
    with pytest.warns(UserWarning, match="PRM reward 0 for 2 rollout"):
        out = PRMReward(prm, beta=0.75)([PROBLEM] * 3, ["", too_long, RIGHT], answer=["2", "2", "27"])
    assert out[0] == 0.0 and out[1] == pytest.approx(0.25) and out[2] == pytest.approx(expected(prm, RIGHT, 1, 0.75))


def test_verl_compute_score_from_env_loaded_by_path(prm, monkeypatch):
    """verl imports the reward file by path (custom_reward_function.path), outside the package."""
    monkeypatch.setenv("RFPRM_PRM", str(resolve_path("tiny-prm")))
    monkeypatch.setenv("RFPRM_BETA", "0.5")
    spec = importlib.util.spec_from_file_location("custom_module", rewards.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    score = module.compute_score("gsm8k", RIGHT, "27", {"question": PROBLEM, "split": "train"})
    assert isinstance(score, float) and score == pytest.approx(expected(prm, RIGHT, 1, 0.5), abs=1e-6)
    bound = make_compute_score(prm, beta=0.5)
    assert bound("gsm8k", WRONG, "27", {"problem": PROBLEM}) == pytest.approx(expected(prm, WRONG, 0, 0.5), abs=1e-6)


def test_verl_without_a_prm_says_how(monkeypatch):
    monkeypatch.delenv("RFPRM_PRM", raising=False)
    monkeypatch.setattr(rewards, "_from_env", None)
    with pytest.raises(RfprmError, match="set RFPRM_PRM"):
        rewards.compute_score("gsm8k", RIGHT, "27")


def test_one_real_grpo_step_with_the_adapter(prm, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    policy_dir = resolve_path("tiny-policy")
    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    reward = PRMReward(prm, beta=0.75)
    calls = []

    def logged(prompts, completions, **kwargs):
        out = reward(prompts, completions, **kwargs)
        calls.append((list(completions), kwargs["answer"], out))
        return out
    logged.__name__ = reward.__name__
    data = datasets.Dataset.from_list([{"prompt": "Compute 6 * 4 + 3.", "answer": "27"},
                                       {"prompt": "Compute 2 + 5.", "answer": "7"}])
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=12, max_steps=1, learning_rate=1e-4, use_cpu=True,
                          report_to=[], logging_steps=1, save_strategy="no", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trl.GRPOTrainer(model=model, reward_funcs=[logged], args=args, train_dataset=data,
                                  processing_class=tok)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer.train()
    assert calls, "GRPOTrainer never called the reward"
    completions, answers, out = calls[0]
    assert len(out) == len(completions) == 4 and set(answers) <= {"27", "7"}
    assert all(0.0 <= r <= 1.0 for r in out)
    logged_rewards = [h for h in trainer.state.log_history if any("rfprm_prm" in k for k in h)]
    assert logged_rewards, trainer.state.log_history
    assert any(not (p.detach() == before[n]).all() for n, p in model.named_parameters())
