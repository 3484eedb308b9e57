"""Thinking before answering: our thinking prompt for models without a native thinking format, and the
split of a streamed reply into reasoning and answer at the closing tag."""

from __future__ import annotations

from tinythink.text.chat_template import ChatTemplate
from tinythink.text.stream import StopStrings

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
INSTRUCTION = (f"Think step by step before you answer. Write your reasoning between {THINK_OPEN} and {THINK_CLOSE}, "
               "then write the final answer.")
# thinking tokens allowed per reasoning_effort (the server's default; the engine closes the thought at its budget)
THINKING_BUDGETS = {"minimal": 0, "low": 256, "medium": 1024, "high": 4096}


def with_instruction(messages: list[dict], instruction: str = INSTRUCTION) -> list[dict]:
    """The conversation with an instruction (ours to think, by default) added to its system message (or as a
    new one)."""
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}"}] + messages[1:]
    return [{"role": "system", "content": instruction}] + messages


def native_thinking(template_source: str) -> bool:
    """Does this chat template have a thinking format of its own (Qwen3's `enable_thinking`, R1 distills)?"""
    return THINK_OPEN in template_source or "enable_thinking" in template_source


def chat_text(template: ChatTemplate, messages: list[dict], think: bool, **template_kwargs) -> str:
    """The prompt of a chat. With `think`, the reply starts inside an open thought: a native format is
    used as the template writes it, others get our instruction. Without, a native template is told not
    to think (Qwen3's convention: `enable_thinking=False` writes an empty thought)."""
    native = native_thinking(template.source)
    if not think:
        return template.render(messages, **template_kwargs, **({"enable_thinking": False} if native else {}))
    text = template.render(messages if native else with_instruction(messages), **template_kwargs)
    return text if text.rstrip().endswith(THINK_OPEN) else text + f"{THINK_OPEN}\n"


def reopens_thought(answer: str) -> bool:
    """Does this answer (the text after a closed thought, so far) open or close another thought: a tag in it, or
    nothing yet but the start of one? Small models imitate the tags; one that opens a second thought where its
    answer should begin answers nothing (the splitter below ends the answer there), so the engine refuses those
    tokens."""
    head = answer.lstrip()
    return (THINK_OPEN[:-1] in answer or THINK_CLOSE[:-1] in answer
            or (bool(head) and len(head) < len(THINK_CLOSE) and (THINK_OPEN.startswith(head)
                                                                 or THINK_CLOSE.startswith(head))))


class ReasoningSplitter:
    """Feeds on reply text (which starts inside the thought); gives back (reasoning, answer) pieces.

    The answer ends where the model opens or closes another thought (small models imitate the tags).
    """

    def __init__(self):
        self.thinking, self.pending, self.answer_started = True, "", False
        self.answer_end = StopStrings([THINK_OPEN, THINK_CLOSE])

    def feed(self, text: str) -> tuple[str, str]:
        if not self.thinking:
            return "", self._answer(text)
        self.pending += text
        cut = self.pending.find(THINK_CLOSE)
        if cut >= 0:
            reasoning, rest = self.pending[:cut], self.pending[cut + len(THINK_CLOSE):]
            self.thinking, self.pending = False, ""
            return reasoning, self._answer(rest)
        hold = max((k for k in range(1, len(THINK_CLOSE)) if self.pending.endswith(THINK_CLOSE[:k])), default=0)
        reasoning, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return reasoning, ""

    def flush(self) -> tuple[str, str]:
        reasoning, self.pending = self.pending, ""
        return reasoning, self._answer(self.answer_end.flush(), held=False)

    def _answer(self, text: str, held: bool = True) -> str:
        if held:
            text = self.answer_end.feed(text)
        if not self.answer_started:  # the answer starts at its first non-blank character
            text = text.lstrip()
            self.answer_started = bool(text)
        return text
