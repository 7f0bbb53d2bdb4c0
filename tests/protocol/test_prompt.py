"""Prompt building: the chat controls' precedence, tools rendered natively or described, and the
reasoning budget only where it applies."""

from __future__ import annotations

from ggufd.chat_template import render_chat_template, template_variables
from ggufd.protocol.prompt import ChatControls, chat_controls
from ggufd.testing import gguf_metadata

TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
)


def test_request_over_model_over_server():
    server = {"chat_template_kwargs": {"a": 1, "b": 1}, "reasoning_effort": "low", "max_reasoning_tokens": 100}
    model = {"chat_template_kwargs": {"b": 2, "c": 2}, "max_reasoning_tokens": 50}
    request = {"chat_template_kwargs": {"c": 3}, "reasoning_effort": "high"}
    assert chat_controls(request, model, server) == ChatControls(
        template_kwargs={"a": 1, "b": 2, "c": 3, "reasoning_effort": "high"}, max_reasoning_tokens=50
    )
    assert chat_controls({"max_reasoning_tokens": 0}, model, server).max_reasoning_tokens == 0  # 0 is a budget
    assert chat_controls({}, {}, {}) == ChatControls()


def test_a_jinja_template_honours_the_variables_it_reads():
    meta = gguf_metadata(TEMPLATE)
    messages = [{"role": "user", "content": "Hi"}]
    prompt = render_chat_template(TEMPLATE, messages, meta, template_kwargs={"enable_thinking": False, "other": 1})
    assert prompt.text == "<user>Hi<assistant><think></think>"
    assert prompt.honoured == frozenset({"enable_thinking"})
    assert "enable_thinking" in template_variables(TEMPLATE)


def test_template_kwargs_cannot_replace_what_ggufd_gives_the_template():
    meta = gguf_metadata(TEMPLATE)
    messages = [{"role": "user", "content": "Hi"}]
    prompt = render_chat_template(
        TEMPLATE, messages, meta, template_kwargs={"messages": [], "add_generation_prompt": 0}
    )
    assert prompt.text == "<user>Hi<assistant>" and prompt.honoured == frozenset()
