"""Chat tokenizers of the LLM arm: how an example becomes token ids and what is scored.

Both tokenizers have one small interface that the packing, the loop and the decoding use:

* ``encode_prompts(questions)``: the ids of each user turn followed by the template's
  generation prompt (what greedy decoding continues);
* ``encode_examples(questions, answers)``: ``(ids, a, b)`` per example, the whole rendered
  conversation with the scored span ``ids[a:b]``: every token after the generation prompt up
  to and including the end-of-turn token (a template's trailing newline after it is not
  scored);
* ``decode(ids)``: text without special tokens; ``eos_id``, ``pad_id``, ``vocab_size``,
  ``name``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ByteChatTokenizer", "HFChatTokenizer"]


class ByteChatTokenizer:
    """A dependency-free chat tokenizer for ``random:`` models: UTF-8 bytes plus three specials.

    Template: ``<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}
    <|im_end|>\\n`` (ChatML, as SmolLM2's without the system turn).
    """

    START, END, PAD = 256, 257, 258
    vocab_size = 259
    name = "byte"

    @property
    def eos_id(self) -> int:
        return self.END

    @property
    def pad_id(self) -> int:
        return self.PAD

    def _turn(self, role: str, text: str | None) -> list[int]:
        ids = [self.START, *f"{role}\n".encode()]
        if text is not None:
            ids += [*text.encode(), self.END, *b"\n"]
        return ids

    def encode_prompts(self, questions: Sequence[str]) -> list[list[int]]:
        return [self._turn("user", q) + self._turn("assistant", None) for q in questions]

    def encode_examples(self, questions: Sequence[str],
                        answers: Sequence[str]) -> list[tuple[list[int], int, int]]:
        out = []
        for p, a in zip(self.encode_prompts(questions), answers):
            ids = p + [*a.encode(), self.END, *b"\n"]
            out.append((ids, len(p), len(ids) - 1))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFChatTokenizer:
    """A Hugging Face tokenizer with a chat template, behind the arm's small interface."""

    def __init__(self, tok, name: str):
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"the tokenizer of {name!r} has no chat template; the LLM arm "
                             "renders every example through the model's chat template")
        self.tok = tok
        self.name = name
        eos = tok.eos_token_id
        if eos is None:
            raise ValueError(f"the tokenizer of {name!r} has no end-of-sequence token")
        self.eos_id = int(eos)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else eos)
        self.vocab_size = len(tok)

    def _render(self, messages: list[dict[str, str]], gen: bool) -> str:
        return self.tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def encode_prompts(self, questions: Sequence[str]) -> list[list[int]]:
        return self._ids([self._render([{"role": "user", "content": q}], True)
                          for q in questions])

    def encode_examples(self, questions: Sequence[str],
                        answers: Sequence[str]) -> list[tuple[list[int], int, int]]:
        prompts = self.encode_prompts(questions)
        fulls = self._ids([self._render([{"role": "user", "content": q},
                                         {"role": "assistant", "content": a}], False)
                           for q, a in zip(questions, answers)])
        out = []
        for p, ids in zip(prompts, fulls):
            n = 0
            while n < min(len(p), len(ids)) and p[n] == ids[n]:
                n += 1
            # the scored span ends at the last end-of-turn token (the template's trailing
            # newline after it is not part of the answer)
            end = len(ids)
            for j in range(len(ids) - 1, n - 1, -1):
                if ids[j] == self.eos_id:
                    end = j + 1
                    break
            if end <= n:
                raise ValueError("chat template rendered an example with no answer tokens")
            out.append((ids, n, end))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)
