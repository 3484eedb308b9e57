"""Chat templates rendered by us against transformers' apply_chat_template."""

import pytest

from tinythink.text.chat_template import ChatTemplate, ChatTemplateError

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3? Ünïcödé 🙂"}],
    [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
]

# A tool-calling template in the style of Qwen2.5's, exercising tools, tojson, tool messages and loop controls.
TOOLS_TEMPLATE = """{%- if tools %}<|im_start|>system
{{ messages[0]['content'] if messages[0]['role'] == 'system' else 'You are helpful.' }}
# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and tools %}{% continue %}{% endif %}
{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>{{ message.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
TOOL_CONVERSATION = [
    {"role": "system", "content": "You check the weather."}, {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "18°C, cloudy"},
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_model_template_matches_transformers(ours, hf_tokenizer, messages, add_generation_prompt):
    t = ours.tokenizer
    mine = ChatTemplate(t.chat_template, t.bos_token, t.eos_token).render(messages, add_generation_prompt)
    theirs = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert mine == theirs


def test_tool_template_matches_transformers(hf_tokenizer):
    mine = ChatTemplate(TOOLS_TEMPLATE).render(TOOL_CONVERSATION, tools=TOOLS)
    theirs = hf_tokenizer.apply_chat_template(TOOL_CONVERSATION, tools=TOOLS, chat_template=TOOLS_TEMPLATE,
                                              tokenize=False, add_generation_prompt=True)
    assert mine == theirs
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in mine


def test_unknown_role_is_a_clear_error():
    with pytest.raises(ChatTemplateError, match="role must be one of"):
        ChatTemplate(None).render([{"role": "wizard", "content": "hi"}])


def test_template_exceptions_surface_as_errors():
    template = ChatTemplate("{{ raise_exception('only user messages, please') }}")
    with pytest.raises(ChatTemplateError, match="only user messages"):
        template.render([{"role": "user", "content": "x"}])


def test_template_is_sandboxed():
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception):
        template.render([{"role": "user", "content": "x"}])
