"""Tool (function) calling: the tools in the prompt, a grammar that makes every call valid, and the calls
parsed back out of the reply.

Calls are written in the Hermes format that Qwen's and many other templates use natively:
`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`. A template that knows `tools` gets them
(and the conversation's calls and results) as it expects; any other template gets our instruction in the
system message. The grammar lets the model either answer in text or call (`auto`), only call (`required`,
a named function), one call or several (`parallel_tool_calls`); the arguments always validate against the
function's `parameters`, because they are generated under that JSON schema.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from tinythink.engine.constraint import compact

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
# With parallel calls a small model tends to repeat its call until max_tokens; the grammar ends the reply here.
MAX_PARALLEL_CALLS = 4

INSTRUCTION = ("You can call functions. Their signatures are JSON schemas between <tools> and </tools>:\n<tools>\n"
               "{tools}\n</tools>\n\nTo call a function, reply only with, for each call:\n"
               f'{CALL_OPEN}\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n{CALL_CLOSE}\n'
               "A function's result comes back in the next message, between <tool_response> and </tool_response>. "
               "If no function fits, answer in plain text.")


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text (OpenAI's shape)
    id: str = ""

    def __post_init__(self):
        self.id = self.id or f"call_{uuid.uuid4().hex[:24]}"

    def openai(self, index: int | None = None) -> dict:
        d = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return d if index is None else {"index": index, **d}


def native(template_source: str) -> bool:
    """Does this chat template render `tools` itself?"""
    return "tools" in template_source


def prompt_messages(messages: list[dict], tools: list[dict], template_knows_tools: bool) -> list[dict]:
    """The conversation as the template should see it. Messages are OpenAI-shaped dicts with text content;
    `tools` is the list of function definitions to offer (empty: offer none)."""
    if template_knows_tools:
        out = []
        for m in messages:
            if m.get("tool_calls"):  # templates expect the arguments as an object
                m = {**m, "tool_calls": [{"type": "function", "function": {
                    "name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}}
                    for c in m["tool_calls"]]}
            out.append(m)
        return out
    out = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = "\n".join(f'{CALL_OPEN}\n{{"name": {json.dumps(c["function"]["name"])}, "arguments": '
                              f'{c["function"]["arguments"]}}}\n{CALL_CLOSE}' for c in m["tool_calls"])
            out.append({"role": "assistant", "content": (m["content"] + "\n" if m["content"] else "") + calls})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if tools:
        listing = "\n".join(json.dumps({"type": "function", "function": t}, ensure_ascii=False) for t in tools)
        instruction = INSTRUCTION.replace("{tools}", listing)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{instruction}"}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


def call_schema(tool: dict) -> dict:
    return {"type": "object", "properties": {"name": {"const": tool["name"]},
                                             "arguments": tool.get("parameters") or {"type": "object"}},
            "required": ["name", "arguments"], "additionalProperties": False}


def grammar(tools: list[dict], must_call: bool, parallel: bool, text_schema: dict | None = None) -> str:
    """A Lark grammar (llguidance's dialect) for the reply: calls to `tools`, or else text when not
    `must_call` (free text, or JSON under `text_schema` when a response_format asks for it). Free text may
    not start with "<", which is what tells a call from an answer as soon as the first character is out."""
    calls = " | ".join(f"call_{i}" for i in range(len(tools)))
    rules = [f'call_{i}: "{CALL_OPEN}\\n" %json {json.dumps(compact(call_schema(t)))} "\\n{CALL_CLOSE}"'
             for i, t in enumerate(tools)]
    reply = f"({calls})" + (f' ("\\n" ({calls}))~0..{MAX_PARALLEL_CALLS - 1}' if parallel else "")
    if must_call:
        start = f"start: {reply}"
    elif text_schema is not None:
        start = f"start: {reply} | %json {json.dumps(compact(text_schema))}"
    else:
        start = f"start: {reply} | TEXT\nTEXT: /[^<](.|\\n)*/"
    return "\n".join([start, *rules])


def parse_calls(text: str) -> list[ToolCall] | None:
    """The calls in a reply, or None when it is a text answer (or a call cut short by max_tokens)."""
    text = text.strip()
    if not text.startswith(CALL_OPEN):
        return None
    calls, decoder, rest = [], json.JSONDecoder(), text
    while rest.startswith(CALL_OPEN):
        try:
            obj, end = decoder.raw_decode(rest[len(CALL_OPEN):].lstrip())
        except json.JSONDecodeError:
            return None
        rest = rest[len(CALL_OPEN):].lstrip()[end:].lstrip()
        if not rest.startswith(CALL_CLOSE) or not isinstance(obj, dict) or "name" not in obj:
            return None
        calls.append(ToolCall(obj["name"], json.dumps(obj.get("arguments", {}), ensure_ascii=False)))
        rest = rest[len(CALL_CLOSE):].lstrip()
    return calls if not rest else None


class CallBuffer:
    """For a streamed reply: passes text answers through as they come, holds back one that turns out to be
    tool calls (the grammar decides at its first character) until it is whole."""

    def __init__(self):
        self.held, self.mode = "", None  # mode: None until decided, then "text" or "calls"

    def feed(self, text: str) -> str:
        if self.mode == "text":
            return text
        self.held += text
        if self.mode is None and self.held.strip():
            self.mode = "calls" if self.held.lstrip().startswith("<") else "text"
        if self.mode == "text":
            text, self.held = self.held, ""
            return text
        return ""

    def finish(self) -> tuple[list[ToolCall] | None, str]:
        """The calls, or else the text still held (a call cut short by max_tokens comes back as text)."""
        calls = parse_calls(self.held) if self.mode == "calls" else None
        return calls, "" if calls else self.held
