"""What the LLM arm's training loop needs of a data set: the :class:`LMTask` interface, and
the registry that ``[llm].task`` names a task from.

A task is a supervised chat data set: each example is one user turn (``question``) and the
assistant turn that answers it (``answer``). The loop renders both through the model's chat
template, trains on the answer tokens, reports the token-weighted test loss, and decodes the
test questions greedily, scoring each completion with the task's :meth:`LMTask.is_correct`
against the example's ``answer``. Nothing else of the loop depends on the task.

    @register_task
    class Arithmetic(LMTask):
        name = "arithmetic"

        def train_examples(self):
            return [QA("What is 2 + 3?", "5"), ...]

        def test_examples(self):
            return [QA("What is 4 + 4?", "8"), ...]

        def is_correct(self, completion, reference):
            return completion.strip() == reference.strip()

    # then: [llm] task = "arithmetic"

GSM8K (:mod:`ablations.llm.gsm8k`) is the built-in task (``"gsm8k"``, the default); it is
imported when first asked for by name, so importing this module stays light (no torch).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from .options import LLMOptions

__all__ = ["ChatExample", "QA", "LMTask", "register_task", "get_task", "task_names"]


class ChatExample(Protocol):
    """One example of a task: ``question`` is the user turn, ``answer`` the assistant turn
    (the training target, and the reference that :meth:`LMTask.is_correct` scores against)."""

    question: str
    answer: str


@dataclass(frozen=True)
class QA:
    """A plain :class:`ChatExample`, for tasks without an example type of their own."""

    question: str
    answer: str


class LMTask(ABC):
    """A data set the LLM arm fine-tunes on; subclass, set :attr:`name`, register.

    name: the id that ``[llm].task`` names. description: how reports name the training data
    (e.g. "GSM8K train (7,473 examples)").

    The example lists are read once per process (the session caches them) and used in the
    order returned: the run seed permutes the training examples; the first
    ``[llm].test_loss_examples`` test examples (0: all) give the test loss and the first
    ``[llm].eval_questions`` the exact match. Return them in a fixed order, so that every
    variant and seed sees the same data.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @classmethod
    def from_options(cls, options: LLMOptions) -> LMTask:
        """The task for a run's options (``[llm].data_dir`` and the like); ``cls()`` unless a
        task overrides it."""
        return cls()

    @abstractmethod
    def train_examples(self) -> Sequence[ChatExample]:
        """All training examples, in a fixed order."""

    @abstractmethod
    def test_examples(self) -> Sequence[ChatExample]:
        """All held-out examples, in a fixed order."""

    @abstractmethod
    def is_correct(self, completion: str, reference: str) -> bool:
        """Whether a decoded completion (special tokens removed, up to the end of the turn)
        answers the example whose ``answer`` is ``reference``."""

    def __repr__(self) -> str:
        return f"<LLM task {self.name}>"


_TASKS: dict[str, type[LMTask]] = {}
#: built-in tasks, imported when first asked for by name
_BUILTIN = {"gsm8k": "ablations.llm.gsm8k"}


def register_task(cls: type[LMTask]) -> type[LMTask]:
    """Class decorator: make ``cls`` the task named ``cls.name`` (a later class of the same
    name replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, LMTask)):
        raise TypeError(f"register_task takes an LMTask subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    """Every task's name, the built-in ones included."""
    return sorted(set(_TASKS) | set(_BUILTIN))


def get_task(name: str) -> type[LMTask]:
    """The task class of that name; an unknown name raises ValueError listing the valid."""
    if name not in _TASKS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _TASKS:
        raise ValueError(f"unknown LLM task {name!r} (valid: {', '.join(task_names())})")
    return _TASKS[name]
