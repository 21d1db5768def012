"""rfprm.tokenizer against HF `tokenizers`/`transformers` on a tiny Qwen-style byte-level BPE.

The fixture trains a small BPE with HF `tokenizers` set up exactly like Qwen2.5's tokenizer.json
(NFC, Split(Qwen regex, isolated), ByteLevel(use_regex=False), ByteLevel decoder) and adds
Qwen-style added tokens, with `<extra_0>` eight ids after `<|endoftext|>` as in the PRM
checkpoints (151651 - 151643). No downloads.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import random
import shutil
import unicodedata
from pathlib import Path

import pytest
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from rfprm.errors import RfprmError
from rfprm.bpe import train_bpe
from rfprm.tokenizer import (QWEN2_PATTERN, QWEN_TIKTOKEN_SPECIALS, Tokenizer, check_vocab_fits,
                             load_tokenizer)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024, and we're testing 12345 numbers!",
    "I'LL say THEY'RE here; you'd think it's fine. Don't panic: 3.14159 + 2.71828 = 5.85987",
    "中文分词测试：我们今天去公园散步。你好，世界！数学题：三加五等于八。",
    "مرحبا بالعالم، هذا اختبار للنص العربي. الرقم ٣ والرقم ٤",
    "Emoji 😀🎉👍🏽 and flags 🇫🇷 with café, naïve, résumé, Ångström, São Paulo",
    "def solve(x: int) -> int:\n    return x ** 2 + 3  # square it\n\n\tif x == 1:\n\t\tpass\n",
    "for (int i = 0; i < n; ++i) { total += a[i] * b[i]; }\n// done\r\n",
    "  leading spaces   and    runs\n\n\n  \r\n trailing   \t",
    "Step 1: (7 + 5) * 3 = 36\n\nStep 2: 36 - 4 = 32\n\nThe answer is \\boxed{32}.",
] * 8
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
            "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<extra_0>",
            "<tool_call>", "</tool_call>"]
NON_SPECIAL = {"<tool_call>", "</tool_call>"}  # Qwen marks these "special": false

TEXTS = [
    "Hello world! The quick brown fox.",
    "中文分词测试：你好，世界！",
    "مرحبا بالعالم",
    "emoji 😀🎉👍🏽🇫🇷 mixed 中文 and English",
    "def f(x):\n    return x ** 2\n\n\n\tpass\r\n",
    "a   b\t\t c  \n\n  \r\n   end   ",
    "   ", "\n", "", " ",
    "12345 + 67890 = 80235; 3.14159; ٣٤٥",
    "Cafe\u0301 nai\u0308ve e\u0301\u0301 A\u030a",  # decomposed accents: NFC must compose them
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "step one<extra_0>step two<extra_0>",
    "<|endoftext|><|endoftext|>x<|im_end|>",
    "not special: <|im_end <extra_1> <|endoftext| <extra_0",
    "<tool_call>{\"name\": 1}</tool_call>",
    "It's WE'RE they'Ll I'M 's",
    "<|im_end|>\u0338 x>\u0338",  # NFC would fold '>' + U+0338 into '≯' and break the special
]


def _hf_trained(path: Path, extra_added: list[str] = SPECIALS) -> Path:
    tk = HFTokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    data = json.loads(tk.to_str())
    n = len(data["model"]["vocab"])
    added = [{"id": n + k, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t not in NON_SPECIAL} for k, t in enumerate(extra_added)]
    data["added_tokens"] = added
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config = {"added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"}
                                       for a in added}}
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return _hf_trained(tmp_path_factory.mktemp("tok") / "ckpt")


@pytest.fixture(scope="module")
def hf(hf_dir) -> HFTokenizer:
    return HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def tok(hf_dir) -> Tokenizer:
    return load_tokenizer(hf_dir)


def _random_texts(n: int, seed: int = 0) -> list[str]:
    pieces = list("abcXYZ019٣ 中文😀é,.!?'\n\r\t-_(){}") + [
        "e\u0301", "A\u030a", "  ", "\n\n", "'s", "'LL", "<|im_end|>", "<extra_0>", "<|im_end",
        "<|endoftext|>", " the", "👍🏽", "🇫🇷", "\u0301", "\u00a0", "\u3000", "> \u0338"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(n)]


# ------------------------------------------------------------------ parity with HF tokenizers

@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_hf(tok, hf, text):
    ids = tok.encode(text)
    assert ids == hf.encode(text).ids
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)


def test_random_text_matches_hf(tok, hf):
    for text in _random_texts(400):
        ids = tok.encode(text)
        assert ids == hf.encode(text).ids, text
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False), text


def test_digits_split_singly_and_nfc(tok):
    assert len(tok.encode("2024")) == 4
    assert tok.encode("Cafe\u0301") == tok.encode("Café")
    assert tok.encode("<|im_end|>\u0338")[0] == tok.im_end_id  # cut at specials before NFC
    assert tok.decode(tok.encode("x>\u0338")) == "x≯"


def test_decode_of_broken_utf8_matches_hf(tok, hf):
    # Random id sequences cut multi-byte characters anywhere: both replace the same bytes by U+FFFD.
    rng = random.Random(1)
    ids = list(tok.mergeable_ranks.values())
    for _ in range(300):
        seq = [rng.choice(ids) for _ in range(rng.randint(1, 8))]
        assert tok.decode(seq) == hf.decode(seq, skip_special_tokens=False), seq
    chinese = "中".encode()
    seq = [tok.mergeable_ranks[chinese[:1]], tok.mergeable_ranks[b"a"]]
    assert tok.decode(seq) == "\ufffda" == hf.decode(seq)


def test_special_tokens_and_attributes(tok, hf):
    n = min(tok.special_tokens.values())
    assert tok.special_tokens == {t: hf.token_to_id(t) for t in SPECIALS}
    assert tok.step_id == n + 8 == tok.token_to_id("<extra_0>")
    assert tok.eos_id == tok.pad_id == n and tok.im_end_id == n + 2
    assert tok.stop_ids == [n + 2, n]
    assert tok.vocab_size == n + len(SPECIALS) == hf.get_vocab_size()
    assert tok.token_to_id("<extra_1>") is None
    assert tok.token_to_id("a") == tok.mergeable_ranks[b"a"]
    assert tok.non_special == NON_SPECIAL


def test_added_token_only_in_tokenizer_config(tmp_path, hf_dir, tok):
    # Some checkpoints list a token only in tokenizer_config.json's added_tokens_decoder.
    shutil.copytree(hf_dir, tmp_path / "c")
    data = json.loads((tmp_path / "c" / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"] = [a for a in data["added_tokens"] if a["content"] != "<extra_0>"]
    (tmp_path / "c" / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_tokenizer(tmp_path / "c").step_id == tok.step_id


def test_gpt2_style_byte_level_file_and_unsupported_pre_tokenizer(tmp_path):
    # A bare ByteLevel(use_regex=True) pre-tokenizer splits with GPT-2's regex, not Qwen's.
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=500, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    (tmp_path / "g").mkdir()
    tk.save(str(tmp_path / "g" / "tokenizer.json"))
    gpt2 = load_tokenizer(tmp_path / "g")
    assert gpt2.normalization is None
    for text in TEXTS + _random_texts(100, seed=4):
        assert gpt2.encode(text) == tk.encode(text).ids
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "w").mkdir()
    tk.save(str(tmp_path / "w" / "tokenizer.json"))
    with pytest.raises(RfprmError, match="pre_tokenizer .* is not supported"):
        load_tokenizer(tmp_path / "w")


def test_all_splits_merges_layout(tmp_path, hf_dir, tok):
    # transformers' tiktoken converter (Llama 3 files) lists every split of a token as a merge.
    data = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ranks = tok.mergeable_ranks
    merges = [[_byte_str(t[:k]), _byte_str(t[k:])]
              for t, r in sorted(ranks.items(), key=lambda kv: kv[1]) if len(t) > 1
              for k in range(1, len(t)) if t[:k] in ranks and t[k:] in ranks]
    assert len(merges) > len(ranks) - 256
    data["model"]["merges"] = merges
    _write_json(tmp_path, data)
    other, other_hf = load_tokenizer(tmp_path), HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert other.mergeable_ranks == ranks
    for text in TEXTS + _random_texts(200, seed=5):
        assert other.encode(text) == other_hf.encode(text).ids == tok.encode(text)


# ------------------------------------------------------------------ other file formats

def _byte_str(token: bytes) -> str:
    from rfprm.bpe import BYTE_TO_CHAR
    return "".join(BYTE_TO_CHAR[b] for b in token)


def test_vocab_json_and_merges_txt(tmp_path, hf_dir, tok):
    data = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    (tmp_path / "vocab.json").write_text(json.dumps(data["model"]["vocab"]), encoding="utf-8")
    merges = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    shutil.copy(hf_dir / "tokenizer_config.json", tmp_path)
    other = load_tokenizer(tmp_path)
    assert other.mergeable_ranks == tok.mergeable_ranks and other.special_tokens == tok.special_tokens
    assert all(other.encode(t) == tok.encode(t) for t in TEXTS)


def test_tiktoken_file(tmp_path, hf_dir, tok):
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in tok.mergeable_ranks.items()]
    (tmp_path / "qwen.tiktoken").write_text("\n".join(lines) + "\n")
    plain = load_tokenizer(tmp_path)  # no tokenizer_config.json: Qwen's standard specials
    n = len(tok.mergeable_ranks)
    assert plain.special_tokens == {t: n + k for k, t in enumerate(QWEN_TIKTOKEN_SPECIALS)}
    assert plain.eos_id == n and plain.im_end_id == n + 2 and plain.step_id is None
    assert plain.special_tokens["<|extra_0|>"] == n + 3 and plain.vocab_size == n + 208
    shutil.copy(hf_dir / "tokenizer_config.json", tmp_path)  # specials from the config
    configured = load_tokenizer(tmp_path / "qwen.tiktoken")
    assert configured.special_tokens == tok.special_tokens
    assert all(configured.encode(t) == tok.encode(t) for t in TEXTS)


@pytest.mark.skipif(importlib.util.find_spec("dashscope") is None,
                    reason="dashscope (which ships Qwen's qwen.tiktoken) is not installed")
def test_real_qwen_tiktoken():
    path = Path(importlib.util.find_spec("dashscope").origin).parent / "resources" / "qwen.tiktoken"
    qwen = load_tokenizer(path)
    assert qwen.encode("12345") == [16, 17, 18, 19, 20]  # digits one by one; "0" has rank 15
    assert qwen.encode("Hello, world!") == [9707, 11, 1879, 0]
    assert (qwen.eos_id, qwen.special_tokens["<|im_start|>"], qwen.im_end_id) == (151643, 151644, 151645)
    assert qwen.decode(qwen.encode("中文 😀 e\u0301")) == "中文 😀 é"


# ------------------------------------------------------------------ saving

def test_save_loads_in_hf_and_back(tmp_path, tok, hf):
    tok.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.mergeable_ranks == tok.mergeable_ranks and again.special_tokens == tok.special_tokens
    assert again.pattern == tok.pattern and again.non_special == tok.non_special
    saved_hf = HFTokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json"))
    original = json.loads(hf.to_str())["model"]["merges"]
    assert json.loads(saved_hf.to_str())["model"]["merges"] == original  # rebuilt merges are HF's
    for text in TEXTS + _random_texts(100, seed=2):
        assert saved_hf.encode(text).ids == tok.encode(text)


def test_save_loads_in_transformers_with_chat_template(tmp_path, tok):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    tok.save(tmp_path)
    fast = AutoTokenizer.from_pretrained(str(tmp_path))
    assert isinstance(fast, PreTrainedTokenizerFast)
    for text in TEXTS:
        assert fast.encode(text, add_special_tokens=False) == tok.encode(text)
        ids = tok.encode(text)
        assert fast.decode(ids) == tok.decode(ids)
    messages = [{"role": "user", "content": "What is (7 + 5) * 3?"},
                {"role": "assistant", "content": "12 * 3 = 36<extra_0>"}]
    rendered = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == tok.render_chat(messages, add_generation_prompt=True)
    assert fast.eos_token_id == tok.eos_id and fast.pad_token_id == tok.pad_id


def test_save_keeps_ids_with_gaps(tmp_path, tok):
    # HF renumbers added tokens that are not in the model vocab; save() must keep our ids anyway.
    n = len(tok.mergeable_ranks)
    gapped = Tokenizer(tok.mergeable_ranks, {"<|endoftext|>": n + 3, "<|im_start|>": n,
                                             "<|im_end|>": n + 1, "<extra_0>": n + 10})
    assert gapped.vocab_size == n + 11
    gapped.save(tmp_path)
    saved_hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert {t: saved_hf.token_to_id(t) for t in gapped.special_tokens} == gapped.special_tokens
    assert load_tokenizer(tmp_path).special_tokens == gapped.special_tokens
    text = "<|im_start|>user\n1+1<extra_0><|im_end|><|endoftext|>"
    assert saved_hf.encode(text).ids == gapped.encode(text)


# ------------------------------------------------------------------ training

def _arithmetic_texts(n: int) -> list[str]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(2, 9)
        out.append(f"Problem: compute ({a} + {b}) * {c}.\n\nStep 1: {a} + {b} = {a + b}\n\n"
                   f"Step 2: {a + b} * {c} = {(a + b) * c}\n\nThe answer is \\boxed{{{(a + b) * c}}}")
    return out


def test_train_bpe_round_trips_and_matches_hf(tmp_path):
    texts = _arithmetic_texts(800) + CORPUS
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
    tok = train_bpe(texts, 400, specials)
    assert tok.vocab_size == 400 and tok.step_id == 399 and len(tok.mergeable_ranks) == 396
    assert train_bpe(texts, 400, specials).mergeable_ranks == tok.mergeable_ranks  # deterministic
    assert len(tok.encode(texts[0])) < 0.7 * len(texts[0].encode())  # it learned words, not digits
    for text in texts[:50] + TEXTS:
        ids = tok.encode(text)
        assert tok.encode(tok.decode(ids)) == ids
        if "\u0338" not in text:  # (see TEXTS: NFC of the whole text would break a special)
            assert tok.decode(ids) == unicodedata.normalize("NFC", text)
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.mergeable_ranks == tok.mergeable_ranks and again.special_tokens == tok.special_tokens
    saved_hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in texts[:200] + TEXTS + _random_texts(200, seed=3):
        assert saved_hf.encode(text).ids == tok.encode(text), text


def test_train_bpe_ignores_special_text_and_stops_early():
    tok = train_bpe(["<extra_0>ab<extra_0>ab"] * 5, 300, ["<extra_0>"])
    assert len(tok.mergeable_ranks) == 257  # only "ab" could be learned; "<extra_0>" was cut out
    assert tok.encode("ab<extra_0>") == [256, 257]


def test_train_bpe_bad_input():
    with pytest.raises(RfprmError, match="smaller than 256"):
        train_bpe(["x"], 200, [])
    with pytest.raises(RfprmError, match="list of str"):
        train_bpe("not a list", 300, [])


# ------------------------------------------------------------------ chat

def test_chat_matches_handwritten_chatml(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}]
    expected = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                "<|im_start|>assistant\n4<|im_end|>\n")
    assert tok.render_chat(messages) == expected
    assert tok.chat(messages) == tok.encode(expected)
    gen = tok.chat(messages[1:2], add_generation_prompt=True)
    tail = tok.encode("<|im_start|>assistant\n")
    assert gen[-len(tail):] == tail and tail[0] == tok.special_tokens["<|im_start|>"]
    assert tok.decode(gen) == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    with_system = tok.render_chat(messages[1:2], default_system="You are Qwen.")
    assert with_system == "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
    assert tok.render_chat(messages, default_system="ignored") == expected  # a system is given


@pytest.mark.parametrize("messages, match", [
    ("hello", "list of dicts"),
    ([{"role": "user"}], "message 0 must be a dict"),
    ([{"role": "tool", "content": "x"}], "role 'tool'"),
    ([{"role": "user", "content": "ok"}, {"role": "user", "content": 3}], "message 1 content"),
])
def test_chat_rejects_bad_messages(tok, messages, match):
    with pytest.raises(RfprmError, match=match):
        tok.chat(messages)


# ------------------------------------------------------------------ bad input

def _write_json(path: Path, data) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return path


def _abc_tokenizer_json(vocab_extra: dict, merges: list[str]) -> dict:
    from rfprm.bpe import BYTE_TO_CHAR
    vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
    vocab.update(vocab_extra)
    return {"normalizer": {"type": "NFC"}, "added_tokens": [],
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges}}


def test_bad_paths(tmp_path):
    with pytest.raises(RfprmError, match="no such directory"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(RfprmError, match="no tokenizer found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{\"model\": ", encoding="utf-8")
    with pytest.raises(RfprmError, match=r"tokenizer.json: malformed JSON"):
        load_tokenizer(tmp_path)


def test_bad_vocabularies(tmp_path):
    ok = _abc_tokenizer_json({"ab": 256, "abc": 257}, ["a b", "ab c"])
    assert load_tokenizer(_write_json(tmp_path / "ok", ok)).encode("abc") == [257]
    cases = {
        "not byte-level": _abc_tokenizer_json({"▁ab": 256}, []),
        "duplicate id 256": _abc_tokenizer_json({"ab": 256, "bc": 256}, ["a b", "b c"]),
        "not in merge order": _abc_tokenizer_json({"ab": 257, "abc": 256}, ["a b", "ab c"]),
        "no merge makes it": _abc_tokenizer_json({"ab": 256, "xyz": 257}, ["a b"]),
        # HF: "bc" first, then "ab", then "ab"+"c". tiktoken would reach "abc" from "a"+"bc".
        "different pair": _abc_tokenizer_json({"bc": 256, "ab": 257, "abc": 258}, ["b c", "a b", "ab c"]),
        "not in the vocabulary": _abc_tokenizer_json({"ab": 256}, ["a b", "ab c"]),
    }
    for match, data in cases.items():
        with pytest.raises(RfprmError, match=match) as info:
            load_tokenizer(_write_json(tmp_path / match.replace(" ", "_"), data))
        assert "tokenizer.json" in str(info.value) and "\n" not in str(info.value)
    bad_added = _abc_tokenizer_json({"ab": 256}, ["a b"])
    bad_added["added_tokens"] = [{"id": 256, "content": "<x>"}]
    with pytest.raises(RfprmError, match="duplicate id 256"):
        load_tokenizer(_write_json(tmp_path / "added", bad_added))


def test_conflicting_added_tokens_in_config(tmp_path, hf_dir):
    shutil.copytree(hf_dir, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "tokenizer_config.json").read_text())
    first = min(config["added_tokens_decoder"], key=int)
    config["added_tokens_decoder"][first]["content"] = "<other>"
    (tmp_path / "c" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(RfprmError, match="tokenizer_config.json: duplicate id"):
        load_tokenizer(tmp_path / "c")


def test_bad_tiktoken_line(tmp_path):
    (tmp_path / "x.tiktoken").write_text("YQ== 0\nnot-base64!! 1\n")
    with pytest.raises(RfprmError, match=r"x.tiktoken:2: expected"):
        load_tokenizer(tmp_path)


def test_decode_and_encode_bad_input(tok):
    for bad in ([tok.vocab_size], [-1]):
        with pytest.raises(RfprmError, match="not in the vocabulary"):
            tok.decode(bad)
    with pytest.raises(RfprmError, match="integer ids"):
        tok.decode(["a"])
    with pytest.raises(RfprmError, match="expected a str"):
        tok.encode(b"bytes")
    assert tok.decode([]) == "" and tok.encode("") == []


def test_check_vocab_fits(tok):
    check_vocab_fits(tok, tok.vocab_size, "model.embed_tokens")
    check_vocab_fits(tok, tok.vocab_size + 64, "model.embed_tokens")  # padded rows, as in Qwen
    with pytest.raises(RfprmError, match="does not match the embedding size"):
        check_vocab_fits(tok, tok.vocab_size - 1, "ckpt/model.safetensors")
