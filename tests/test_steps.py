"""Step splitting, <think> splitting and the two alignment rules of rfprm.steps."""
import pytest

from rfprm import world
from rfprm.errors import RfprmError
from rfprm.steps import (align_pairs, align_steps, join_steps, paired_response_steps,
                         split_steps, split_think)


# ----------------------------------------------------------------------------- splitting

def test_split_steps_on_blank_lines():
    assert split_steps("a\n\nb") == ["a", "b"]
    assert split_steps("  a \nstill a\n\n\n\n b  \n") == ["a \nstill a", "b"]
    assert split_steps("a\n   \t\nb") == ["a", "b"]  # a whitespace-only line is blank
    assert split_steps("a\r\n\r\nb\r\nc") == ["a", "b\nc"]  # Windows line ends, normalised
    assert split_steps("") == [] and split_steps(" \n\n\t\n ") == []
    assert split_steps("one step") == ["one step"]


def test_join_steps_inverts_split_steps():
    steps = ["First, 7 + 5 = 12.", "Then 12 * 3 = 36.\nCheck: yes.", "Done."]
    assert split_steps(join_steps(steps)) == steps
    assert join_steps(steps) == "First, 7 + 5 = 12.\n\nThen 12 * 3 = 36.\nCheck: yes.\n\nDone."


def test_split_steps_agrees_with_the_world():
    for r in world.make_traces(50, seed=3):
        for text in (r["trajectory"], r["response"]):
            assert split_steps(text) == world.split_steps(text)


def test_split_think():
    assert split_think("<think>\na\n\nb\n</think>\n\nthe answer") == ("a\n\nb", "the answer")
    assert split_think("  \n<think>a</think>") == ("a", "")  # empty response: the caller decides
    # R1-style chat templates put <think> in the prompt: the text starts inside the thinking
    assert split_think("a\n\nb\n</think>\n\nresp") == ("a\n\nb", "resp")
    for r in world.make_traces(20, seed=4):
        text = world.format_trace(r["trajectory"], r["response"])
        assert split_think(text) == (r["trajectory"], r["response"])


@pytest.mark.parametrize("text, message", [
    ("no tags at all", "found no think tags"),
    ("<think>never closed", "'<think>' without '</think>'"),
    ("<think>a</think>b</think>c", "found 1 '<think>' and 2 '</think>'"),
    ("<think>a<think>b</think>c", "found 2 '<think>' and 1 '</think>'"),
    ("a</think>b<think>c", "'<think>' comes after '</think>'"),
    ("Sure! <think>a</think>b", "text before '<think>': 'Sure!'"),
])
def test_split_think_rejects_unbalanced_tags(text, message):
    with pytest.raises(RfprmError, match=message.replace("(", r"\(")):
        split_think(text)


# ----------------------------------------------------------------------------- alignment

def exact(thinking: str, response: str) -> float:
    """Similarity for tests: 1 when the (merged) thinking text, lower-cased, equals the response
    text; a thinking group that merely starts with the response step gets 0.5."""
    t, r = thinking.lower(), response.lower()
    return 1.0 if t == r else 0.5 if t.startswith(r) else 0.0


def test_equal_counts_pair_one_to_one():
    steps = ["a", "b", "c"]
    for sim in (None, exact):
        assert align_pairs(steps, ["A", "B", "C"], sim) == [([0], [0]), ([1], [1]), ([2], [2])]
        assert align_steps(steps, ["A", "B", "C"], sim) == [[0], [1], [2]]
    assert align_steps(["only"], ["one"]) == [[0]]


def test_tail_rule_folds_surplus_thinking_into_the_last_kept_step():
    thinking = ["a", "b", "c", "d", "e"]
    assert align_steps(thinking, ["A", "B"]) == [[0], [1, 2, 3, 4]]
    assert align_pairs(thinking, ["A", "B"]) == [([0], [0]), ([1, 2, 3, 4], [1])]
    assert align_steps(thinking, ["A"]) == [[0, 1, 2, 3, 4]]  # one response step takes all


def test_tail_rule_with_more_response_steps():
    response = ["A", "B", "C", "D"]
    assert align_pairs(["a", "b"], response) == [([0], [0]), ([1], [1, 2, 3])]
    assert align_steps(["a", "b"], response) == [[0], [1], [1], [1]]
    assert align_steps(["a"], response) == [[0], [0], [0], [0]]  # one thinking step for all
    assert paired_response_steps(["a", "b"], response) == ["A", "B\n\nC\n\nD"]


def test_similarity_rule_finds_the_surplus_thinking_step():
    # "x" is a detour in the middle: the tail rule would pair b with c; the greedy rule merges
    # x into b and keeps the rest one-to-one.
    thinking, response = ["a", "b", "x", "c", "d"], ["a", "b", "c", "d"]
    assert align_steps(thinking, response) == [[0], [1], [2], [3, 4]]
    assert align_steps(thinking, response, exact) == [[0], [1, 2], [3], [4]]
    # two detours, one at the start (index 0 cannot merge backwards, so it stays with a)
    thinking = ["a", "y", "b", "c", "z", "d"]
    assert align_steps(thinking, response, exact) == [[0, 1], [2], [3, 4], [5]]
    assert paired_response_steps(thinking, response, exact) == ["a", "a", "b", "c", "c", "d"]


def test_similarity_rule_with_more_response_steps():
    # the response repeats itself after its second step; similarity is (thinking, response)
    thinking, response = ["p", "q", "r"], ["p", "q", "again", "r"]
    calls = []

    def sim(t, r):
        calls.append((t, r))
        return 1.0 if t == r else 0.5 if r.startswith(t) else 0.0

    assert align_pairs(thinking, response, sim) == [([0], [0]), ([1], [1, 2]), ([2], [3])]
    assert align_steps(thinking, response, sim) == [[0], [1], [1], [2]]
    assert all(t in thinking for t, _ in calls)  # arguments stay in (thinking, response) order
    assert paired_response_steps(thinking, response, sim) == ["p", "q\n\nagain", "r"]


def test_similarity_rule_is_memoised_and_ties_give_the_tail_rule():
    calls = []

    def flat(t, r):
        calls.append((t, r))
        return 0.3

    thinking = [f"s{i}" for i in range(8)]
    assert align_steps(thinking, ["A", "B", "C"], flat) == align_steps(thinking, ["A", "B", "C"])
    assert len(calls) == len(set(calls))


def test_alignment_errors():
    with pytest.raises(RfprmError, match="0 thinking and 2 response steps"):
        align_steps([], ["a", "b"])
    with pytest.raises(RfprmError, match="1 thinking and 0 response"):
        align_pairs(["a"], [])
    with pytest.raises(RfprmError, match="similarity returned nan"):
        align_steps(["a", "b"], ["a"], lambda t, r: float("nan"))


def test_world_traces_align_one_to_one_or_by_the_rule():
    for r in world.make_traces(100, seed=5):
        thinking, response = split_steps(r["trajectory"]), split_steps(r["response"])
        pairs = align_pairs(thinking, response)
        assert [i for p, _ in pairs for i in p] == list(range(len(thinking)))
        assert [i for _, p in pairs for i in p] == list(range(len(response)))
        assert len(pairs) == min(len(thinking), len(response))
        assert all(len(t) == 1 or len(q) == 1 for t, q in pairs)
