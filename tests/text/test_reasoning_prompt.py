"""Thinking prompts: our instruction for templates without a thinking format, the template's own otherwise."""

from tinythink.text.chat_template import ChatTemplate
from tinythink.text.reasoning import INSTRUCTION, THINK_OPEN, chat_text, native_thinking

ASK = [{"role": "user", "content": "Is 7 prime?"}]
# the shape of Qwen3's template: it writes an empty thought when told not to think
QWEN3_LIKE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n"
              "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
R1_LIKE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|><think>\n"


def test_templates_without_a_thinking_format_get_our_instruction():
    plain = ChatTemplate(None)  # ChatML
    assert not native_thinking(plain.source)
    thinking = chat_text(plain, ASK, think=True)
    assert INSTRUCTION in thinking and thinking.endswith(f"{THINK_OPEN}\n")
    assert INSTRUCTION not in chat_text(plain, ASK, think=False)


def test_native_formats_are_used_as_written():
    qwen = ChatTemplate(QWEN3_LIKE)
    assert native_thinking(qwen.source)
    assert chat_text(qwen, ASK, think=True).endswith("<|im_start|>assistant\n<think>\n")
    assert chat_text(qwen, ASK, think=False).endswith("<think>\n\n</think>\n\n")  # told not to think
    r1 = ChatTemplate(R1_LIKE)
    text = chat_text(r1, ASK, think=True)
    assert text.count(THINK_OPEN) == 1 and INSTRUCTION not in text  # the template opens the thought itself
