"""GSM8K (Cobbe et al. 2021) for the LLM arm: loading, extraction of the final answer, and
the task :class:`GSM8K` (``[llm].task = "gsm8k"``, the default).

Data source, in this order:

1. ``data_dir`` (an argument, or the ``[llm].data_dir`` option of a config),
2. the environment variable ``QSGD_GSM8K_DIR``,
3. the public dataset hub (``openai/gsm8k``, config ``main``) through the ``datasets`` package,
   when the machine is online.

A local directory holds ``train.jsonl`` (7,473 lines) and ``test.jsonl`` (1,319 lines) in the
format of the original release: one JSON object per line with the string fields ``question``
and ``answer``, the answer ending in ``#### <final number>``. Blank lines are skipped; any other
malformed line raises :class:`GSM8KFormatError` naming the file and the line number.

Answers. :func:`extract_answer` returns the number after the *last* ``####`` of a text,
normalised (thousands separators, a leading ``$`` and trailing zeros after a decimal point
dropped; ``-0`` → ``0``), or ``None`` when there is no ``####`` followed by a number. A model's
completion is scored by :func:`is_correct`: exact match of the two normalised numbers; a
completion without ``#### <number>`` counts as wrong (no fallback to "the last number in the
text", so that the metric measures whether the model learned the answer format too).

Reference: K. Cobbe et al., "Training Verifiers to Solve Math Word Problems", arXiv 2110.14168.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .data import LMTask, register_task

__all__ = [
    "GSM8K",
    "Example",
    "GSM8KFormatError",
    "SPLITS",
    "ENV_VAR",
    "resolve_dir",
    "load_split",
    "read_jsonl",
    "extract_answer",
    "is_correct",
]

SPLITS = ("train", "test")
ENV_VAR = "QSGD_GSM8K_DIR"
HUB_NAME = ("openai/gsm8k", "main")
_NUMBER = re.compile(r"-?\s*\$?\s*(\d[\d,]*(?:\.\d*)?|\.\d+)")


class GSM8KFormatError(ValueError):
    """A GSM8K JSONL file has a malformed line; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One GSM8K problem: the question (user turn) and the worked answer (assistant turn)."""

    question: str
    answer: str

    @property
    def final(self) -> str | None:
        """The normalised final number of the reference answer."""
        return extract_answer(self.answer)


def resolve_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory to read: ``data_dir``, else ``$QSGD_GSM8K_DIR``, else None."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else None


def read_jsonl(path: str | os.PathLike) -> list[Example]:
    """Read one GSM8K JSONL file; a malformed line, or bytes that are not UTF-8, raise
    :class:`GSM8KFormatError` with the file and line number."""
    path = Path(path)
    out: list[Example] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise GSM8KFormatError(f"{path}:{lineno}: not UTF-8 text (byte {err.start} of "
                                       f"the line: {err.reason})") from None
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise GSM8KFormatError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise GSM8KFormatError(
                    f"{where}: expected a JSON object with 'question' and 'answer', "
                    f"got {type(obj).__name__}")
            for key in ("question", "answer"):
                if key not in obj:
                    raise GSM8KFormatError(f"{where}: missing field {key!r}")
                if not isinstance(obj[key], str) or not obj[key].strip():
                    raise GSM8KFormatError(f"{where}: field {key!r} must be a non-empty string")
            if extract_answer(obj["answer"]) is None:
                raise GSM8KFormatError(
                    f"{where}: the answer does not end in '#### <number>' (GSM8K format)")
            out.append(Example(obj["question"], obj["answer"]))
    if not out:
        raise GSM8KFormatError(f"{path}: no examples")
    return out


def load_split(split: str, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """All examples of ``split`` ("train" or "test"), in the file's order.

    Raises:
        ValueError: unknown split.
        FileNotFoundError: a local directory without ``<split>.jsonl`` (says how to get it).
        GSM8KFormatError: a malformed line.
        RuntimeError: no local directory and the hub cannot be used (says how to fix it).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown GSM8K split {split!r}; valid: {', '.join(SPLITS)}")
    local = resolve_dir(data_dir)
    if local is not None:
        path = local / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"GSM8K file not found: {path}. The directory must hold train.jsonl and "
                f"test.jsonl in the original format (one object per line with 'question' and "
                f"'answer'); set [llm].data_dir or ${ENV_VAR} to such a directory")
        return read_jsonl(path)
    return _load_from_hub(split)


def _load_from_hub(split: str) -> list[Example]:
    try:
        import datasets
    except ImportError:
        raise RuntimeError(
            "no local GSM8K directory given and the 'datasets' package is not installed: set "
            f"${ENV_VAR} (or [llm].data_dir) to a directory with train.jsonl and test.jsonl, "
            "or `pip install datasets` to download openai/gsm8k from the hub") from None
    try:
        ds = datasets.load_dataset(*HUB_NAME, split=split)
    except Exception as err:  # offline, hub down, ...
        raise RuntimeError(
            f"could not load {HUB_NAME[0]} ({HUB_NAME[1]}) from the dataset hub ({err}); set "
            f"${ENV_VAR} to a local directory with train.jsonl and test.jsonl") from err
    out = []
    for i, row in enumerate(ds):
        if extract_answer(row["answer"]) is None:
            raise GSM8KFormatError(f"{HUB_NAME[0]}[{split}] row {i}: answer without '####'")
        out.append(Example(row["question"], row["answer"]))
    return out


def _normalise(number: str) -> str | None:
    s = number.replace(",", "").replace("$", "").replace(" ", "")
    neg = s.startswith("-")
    s = s.lstrip("-")
    if s.endswith("."):
        s = s[:-1]
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if neg:
        d = -d
    if d == 0:
        return "0"
    text = format(d.normalize(), "f")
    return text


def extract_answer(text: str) -> str | None:
    """The normalised number after the last ``####`` of ``text``, or None.

    >>> extract_answer("so 3 + 4 = 7\\n#### 7")
    '7'
    >>> extract_answer("#### $1,250.00")
    '1250'
    >>> extract_answer("no marker 12") is None
    True
    """
    if not isinstance(text, str) or "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1]
    m = _NUMBER.match(tail.strip())
    if m is None:
        return None
    return _normalise(m.group(0))


def is_correct(completion: str, reference_answer: str) -> bool:
    """Exact match of the final numbers of a completion and a reference answer."""
    pred = extract_answer(completion)
    gold = extract_answer(reference_answer)
    return pred is not None and gold is not None and pred == gold


@register_task
class GSM8K(LMTask):
    """GSM8K as an LLM task: all 7,473 training and 1,319 test problems in the files' order;
    a completion is correct when :func:`is_correct` says so (exact match of the number after
    ``####``).

    data_dir: the local directory (None: ``$QSGD_GSM8K_DIR``, else the hub; :func:`load_split`).
    """

    name = "gsm8k"
    description = "GSM8K train (7,473 examples)"

    def __init__(self, data_dir: str | os.PathLike | None = None):
        self.data_dir = data_dir

    @classmethod
    def from_options(cls, options) -> GSM8K:
        return cls(options.data_dir or None)

    def train_examples(self) -> list[Example]:
        return load_split("train", self.data_dir)

    def test_examples(self) -> list[Example]:
        return load_split("test", self.data_dir)

    def is_correct(self, completion: str, reference: str) -> bool:
        return is_correct(completion, reference)
