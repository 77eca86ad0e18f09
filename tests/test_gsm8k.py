"""GSM8K loading, answer extraction and the GSM8K task of the LLM arm, on generated fixtures
(never the real data)."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ablations.llm import gsm8k
from ablations.llm.gsm8k import (
    GSM8KFormatError,
    extract_answer,
    is_correct,
    load_split,
    read_jsonl,
)


def _example(i: int) -> dict:
    a, b = 3 + i, 4 + 2 * i
    return {"question": f"Ann has {a} pens and buys {b} more. How many pens does she have?",
            "answer": f"She has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} pens.\n#### {a + b}"}


def write_split(directory, split: str, n: int, extra_lines: list[str] = ()) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(_example(i)) for i in range(n)] + list(extra_lines)
    (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "gsm8k"
    write_split(d, "train", 6)
    write_split(d, "test", 3)
    return d


def test_load_from_dir_keeps_order_and_fields(data_dir):
    train = load_split("train", data_dir)
    assert len(train) == 6
    assert train[0] == gsm8k.Example(**_example(0))
    assert [e.final for e in train] == [str(7 + 3 * i) for i in range(6)]
    assert len(load_split("test", str(data_dir))) == 3


def test_env_var_is_the_fallback(data_dir, monkeypatch):
    monkeypatch.setenv(gsm8k.ENV_VAR, str(data_dir))
    assert len(load_split("test")) == 3
    assert gsm8k.resolve_dir(None) == data_dir
    # an explicit directory wins over the environment
    other = data_dir.parent / "other"
    write_split(other, "test", 2)
    assert len(load_split("test", other)) == 2


def test_blank_lines_are_skipped(tmp_path):
    write_split(tmp_path, "train", 2, extra_lines=["", "   "])
    assert len(read_jsonl(tmp_path / "train.jsonl")) == 2


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"question": "q?"}), "missing field 'answer'"),
    (json.dumps({"question": 3, "answer": "#### 3"}), "field 'question' must be a non-empty"),
    (json.dumps({"question": "q?", "answer": "no final marker 3"}), "does not end in '####"),
    (json.dumps({"question": "q?", "answer": "#### many"}), "does not end in '####"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
    write_split(tmp_path, "train", 3, extra_lines=[bad])
    path = tmp_path / "train.jsonl"
    with pytest.raises(GSM8KFormatError) as err:
        read_jsonl(path)
    assert f"{path}:4:" in str(err.value)
    assert message in str(err.value)


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "test.jsonl").write_text("\n")
    with pytest.raises(GSM8KFormatError, match="no examples"):
        load_split("test", tmp_path)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="QSGD_GSM8K_DIR"):
        load_split("train", tmp_path)


def test_unknown_split():
    with pytest.raises(ValueError, match="valid: train, test"):
        load_split("validation", "/nonexistent")


def test_no_source_says_how_to_fix(monkeypatch):
    monkeypatch.delenv(gsm8k.ENV_VAR, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(RuntimeError, match="QSGD_GSM8K_DIR"):
        load_split("train")


@pytest.mark.parametrize("text, expected", [
    ("so 48 + 24 = 72\n#### 72", "72"),
    ("#### 1,000", "1000"),
    ("#### $5.50", "5.5"),
    ("#### -3", "-3"),
    ("#### 18.00", "18"),
    ("#### 0.0", "0"),
    ("#### -0", "0"),
    ("#### .5", "0.5"),
    ("#### 7.", "7"),
    ("####12 apples", "12"),
    ("first #### 3 then #### 4", "4"),
    ("#### 10\n<|im_end|>", "10"),
    ("no marker, 12", None),
    ("#### twelve", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_is_correct_compares_normalised_numbers():
    assert is_correct("blah\n#### 1,250", "x\n#### 1250")
    assert is_correct("#### 3.0", "#### 3")
    assert not is_correct("the answer is 3", "#### 3")  # no marker: wrong
    assert not is_correct("#### 4", "#### 3")


@given(st.integers(min_value=-10**9, max_value=10**9))
def test_extract_roundtrips_formatted_integers(n):
    assert extract_answer(f"work...\n#### {n:,}") == str(n)
    assert extract_answer(f"#### {n}.00") == str(n)


def test_gsm8k_task_reads_the_options_data_dir(data_dir, monkeypatch):
    """The registered task "gsm8k" (the [llm].task default) is load_split and is_correct."""
    from ablations.llm import LLMOptions
    from ablations.llm.data import get_task

    monkeypatch.delenv(gsm8k.ENV_VAR, raising=False)
    assert LLMOptions().task == "gsm8k"
    task = get_task("gsm8k").from_options(LLMOptions(data_dir=str(data_dir)))
    assert isinstance(task, gsm8k.GSM8K)
    assert task.train_examples() == load_split("train", data_dir)
    assert task.test_examples() == load_split("test", data_dir)
    ref = task.test_examples()[0].answer
    assert task.is_correct(f"so...\n#### {extract_answer(ref)}", ref)
    assert not task.is_correct("#### -1", ref)
    # "" falls back to $QSGD_GSM8K_DIR
    monkeypatch.setenv(gsm8k.ENV_VAR, str(data_dir))
    assert len(get_task("gsm8k").from_options(LLMOptions()).test_examples()) == 3



def test_a_file_that_is_not_utf8_names_file_and_line(tmp_path):
    write_split(tmp_path, "train", 2)
    path = tmp_path / "train.jsonl"
    with open(path, "ab") as fh:  # a latin-1 line after two good ones
        fh.write('{"question": "café?", "answer": "#### 1"}\n'.encode("latin-1"))
    with pytest.raises(GSM8KFormatError, match=r"train\.jsonl:3: not UTF-8 text \(byte \d+"):
        read_jsonl(path)
