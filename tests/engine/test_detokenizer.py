"""Incremental detokenization: never splits a UTF-8 character, never leaks a stop string."""

import pytest

from engine.detokenizer import IncrementalDetokenizer
from engine.tokenizer import Tokenizer

TEXTS = [
    "Héllo wörld — naïve café 😀🎉 日本語のテキスト",
    "def f(x):\n    return x ** 2  # ✓",
    "  leading spaces\tand tabs",
]


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return Tokenizer.from_dir(bundled_model_dir)


def stream(tokenizer, prompt_ids, output_ids, stop=(), include_stop=False):
    token_ids = list(prompt_ids)
    detok = IncrementalDetokenizer(tokenizer, token_ids, len(prompt_ids), list(stop), include_stop)
    deltas, hit = [], None
    for t in output_ids:
        token_ids.append(t)
        hit = detok.update()
        deltas.append(detok.take_delta(finished=hit is not None))
        if hit:
            break
    if not hit:
        deltas.append(detok.take_delta(finished=True))
    return deltas, hit


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_concatenate_to_the_full_decode(tokenizer, text):
    prompt = tokenizer.encode("Say:")
    output = tokenizer.encode(text)
    deltas, _ = stream(tokenizer, prompt, output)
    assert "".join(deltas) == tokenizer.decode(output)
    assert not any("\ufffd" in d for d in deltas)


def test_multibyte_character_split_across_tokens_is_emitted_whole(tokenizer):
    output = tokenizer.encode("😀")
    assert len(output) > 1, "the emoji should span several byte-level tokens"
    deltas, _ = stream(tokenizer, tokenizer.encode("x"), output)
    assert deltas[-1] == "😀" or "".join(deltas) == "😀"
    assert all(d in ("", "😀") for d in deltas)


@pytest.mark.parametrize("stop", ["END", "stop here", "\n\n"])
def test_stop_string_split_across_tokens_never_leaks(tokenizer, stop):
    text = f"alpha beta gamma {stop} delta epsilon"
    deltas, hit = stream(tokenizer, tokenizer.encode("go"), tokenizer.encode(text), stop=[stop])
    assert hit == stop
    assert "".join(deltas) == text[: text.index(stop)]
    for i in range(
        len(deltas)
    ):  # no prefix of the stream ever shows any part of the stop string after "gamma "
        assert stop not in "".join(deltas[: i + 1])


def test_include_stop_str_in_output(tokenizer):
    deltas, hit = stream(
        tokenizer, [1], tokenizer.encode("one two STOP three"), stop=["STOP"], include_stop=True
    )
    assert hit == "STOP" and "".join(deltas) == "one two STOP"


def test_earliest_of_several_stop_strings_wins(tokenizer):
    deltas, hit = stream(tokenizer, [1], tokenizer.encode("a b c d"), stop=["d", "b c"])
    assert hit == "b c" and "".join(deltas) == "a "
