"""rfprm.answers: the boxed-answer rule with the built-in checker and with math-verify."""
import pytest

from rfprm import answers
from rfprm.answers import answers_equal, extract_boxed, is_correct, set_default_checker
from rfprm.errors import RfprmError

needs_math_verify = pytest.mark.skipif(not answers.has_math_verify(), reason="math-verify not installed")

# (response's boxed answer, reference, builtin verdict, math-verify verdict)
CASES = [
    ("032", "32", True, True),
    ("1,032", "1032", True, True),
    ("27", "28", False, False),
    ("\\frac{1}{2}", "0.5", False, True),
    ("\\frac12", "1/2", False, True),
    ("[0, 1)", "[0,1)", True, True),          # spaces: the built-in checker drops them too
    ("(0,1)", "[0,1]", False, False),
    ("10\\text{ cm}", "10", False, True),
    ("\\frac{\\sqrt2}{2}", "\\sqrt{2}/2", False, True),
    ("x^2+1", "1+x^2", False, True),
]


@pytest.mark.parametrize("boxed, reference, builtin, _", CASES)
def test_builtin_checker(boxed, reference, builtin, _):
    assert is_correct(f"so \\boxed{{{boxed}}}.", reference, checker="builtin") is builtin


@needs_math_verify
@pytest.mark.parametrize("boxed, reference, _, verified", CASES)
def test_math_verify_checker(boxed, reference, _, verified):
    assert is_correct(f"so \\boxed{{{boxed}}}.", reference, checker="math-verify") is verified
    assert is_correct(f"so \\boxed{{{boxed}}}.", reference) is verified      # auto = math-verify here


def test_auto_falls_back_to_builtin_without_math_verify(monkeypatch):
    monkeypatch.setattr(answers, "has_math_verify", lambda: False)
    assert not is_correct("\\boxed{\\frac{1}{2}}", "0.5")
    assert is_correct("\\boxed{032}", 32)
    with pytest.raises(RfprmError, match="math-verify package is not installed"):
        is_correct("\\boxed{1}", "1", checker="math-verify")


@needs_math_verify
def test_one_switch_for_the_program():
    try:
        set_default_checker("builtin")
        assert not is_correct("\\boxed{\\frac{1}{2}}", "0.5")
        set_default_checker("auto")
        assert is_correct("\\boxed{\\frac{1}{2}}", "0.5")
    finally:
        set_default_checker("auto")


def test_no_boxed_answer_and_bad_checker():
    assert not is_correct("the answer is 5", "5")
    assert extract_boxed("\\boxed{a} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    with pytest.raises(RfprmError, match="unknown answer checker 'sympy'"):
        answers_equal("1", "1", checker="sympy")
