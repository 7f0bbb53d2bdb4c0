"""The phi family (Microsoft Phi-3, Phi-3.5, Phi-4 and Phi-4-mini): three prompt styles, one family.

Written exactly like a third-party plugin. The formats are Microsoft's published templates
(tokenizer_config.json on the Hugging Face hub); the GGUF's own template picks the style:

Phi-3 / Phi-3.5 (microsoft/Phi-3.5-mini-instruct; the default when a phi3 GGUF has no template)::

    <|system|>
    {system}<|end|>
    <|user|>
    {user}<|end|>
    <|assistant|>
    {answer}<|end|>
    <|assistant|>

Phi-4 (microsoft/phi-4, template contains ``<|im_sep|>``)::

    <|im_start|>system<|im_sep|>{system}<|im_end|><|im_start|>user<|im_sep|>{user}<|im_end|><|im_start|>assistant<|im_sep|>

Phi-4-mini (microsoft/Phi-4-mini-instruct, template has ``<|assistant|>`` with no newline after it)::

    <|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>

Phi-3 leaves out an empty system message; the other two render every message as sent.
Contents are not trimmed. The BOS token is added as the vocabulary asks. Phi has no
tool-call syntax here: assistant ``tool_calls`` and ``tool`` messages are refused (400).
"""

from __future__ import annotations

import ggufd
from ggufd import ChatPrompt, InvalidRequest

FAMILY = "phi"
PHI_ARCHITECTURES = {"phi3", "phimoe"}  # Phi-3, 3.5, 3.5-MoE, 4 and 4-mini are all converted as these
PHI3, PHI4, PHI4_MINI = "phi3", "phi4", "phi4-mini"
IM_SEP = "<|im_sep|>"
END = "<|end|>"
IM_END = "<|im_end|>"
STOPS = {
    PHI3: [END, "<|user|>", "<|endoftext|>"],
    PHI4_MINI: [END, "<|user|>", "<|endoftext|>"],
    PHI4: [IM_END],
}


def prompt_style(metadata) -> str:
    """Which Phi prompt style the GGUF's template speaks (Phi-3 when it has none)."""
    template = metadata.chat_template or ""
    if IM_SEP in template:
        return PHI4
    if "<|assistant|>" in template and "<|assistant|>\\n" not in template and "<|assistant|>\n" not in template:
        return PHI4_MINI
    return PHI3


@ggufd.hookimpl
def detect_family(metadata, spec):
    template = metadata.chat_template or ""
    if "<|im_start|>" in template and IM_SEP in template:
        return FAMILY  # Phi-4, also as a "llamafied" conversion under another architecture
    # a Phi fine-tune in another format (ChatML, ...) is left to its own template
    if metadata.architecture in PHI_ARCHITECTURES and (
        not template or (END in template and "<|assistant|>" in template)
    ):
        return FAMILY
    return None


def _message(style: str, role: str, content: str) -> str:
    if style == PHI4:
        return f"<|im_start|>{role}{IM_SEP}{content}{IM_END}"
    if style == PHI4_MINI:
        return f"<|{role}|>{content}{END}"
    return f"<|{role}|>\n{content}{END}\n"


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != FAMILY:
        return None
    style = prompt_style(model.metadata)
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("A phi chat needs at least one user message.", param="messages")
    parts = []
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "tool" or message.get("tool_calls"):
            raise InvalidRequest(
                "Phi models have no tool-call format; tool calls and tool results cannot be sent.",
                param=f"messages.{index}",
            )
        if role == "system" and style == PHI3 and not message["content"]:
            continue
        parts.append(_message(style, role, message["content"]))
    parts.append({PHI4: f"<|im_start|>assistant{IM_SEP}", PHI4_MINI: "<|assistant|>", PHI3: "<|assistant|>\n"}[style])
    add_bos = bool(model.metadata.get("tokenizer.ggml.add_bos_token", True))
    return ChatPrompt(text="".join(parts), stop=(IM_END if style == PHI4 else END,), add_bos=add_bos)


@ggufd.hookimpl
def stop_sequences(model):
    if model.family == FAMILY:
        return list(STOPS[prompt_style(model.metadata)])
    return None
