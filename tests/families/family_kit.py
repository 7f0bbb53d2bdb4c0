"""What the family tests share: the published templates (``templates/*.jinja``), each built-in
family's test defaults (the metadata its models carry, its stop strings, a tool call in its syntax),
the published-template variants its prompts must match byte for byte, and the conversions the
published (Hugging Face) templates expect. Models and metadata are built with :mod:`ggufd.testing`.

Imported by the modules in this folder as ``family_kit`` (pytest puts the folder on ``sys.path``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ggufd.gguf_metadata import GGUFMetadata
from ggufd.testing import gguf_metadata, model_info, render_template
from ggufd.types import ChatPrompt, ModelInfo

TEMPLATES = Path(__file__).parent / "templates"
_KEEP: Any = object()  # "the family's default" for Family.metadata


def template(name: str) -> str:
    """A published chat template from ``templates/<name>.jinja``, byte for byte."""
    return (TEMPLATES / f"{name}.jinja").read_text("utf-8")


def call_hook(implementation: Callable[..., Any], **arguments: Any) -> Any:
    """Call a plugin's hook implementation as pluggy does: with the arguments it names (families
    written before ``tools`` and ``template_kwargs`` existed take only ``model`` and ``messages``)."""
    names = inspect.signature(implementation).parameters
    return implementation(**{key: value for key, value in arguments.items() if key in names})


def hf_messages(messages: Sequence[Mapping[str, Any]], *, tool_results_as_json: bool = False) -> list[dict]:
    """The same chat as Hugging Face templates expect it: tool-call arguments as objects (ggufd passes
    plugins the JSON string a client sent), optionally JSON tool results as objects too (given as
    strings, the Llama 3.1 template would JSON-quote a tool result: strings are iterable)."""
    result = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": json.loads(call["function"]["arguments"])}}
                for call in message["tool_calls"]
            ]
        if tool_results_as_json and message["role"] == "tool":
            message["content"] = json.loads(message["content"])
        result.append(message)
    return result


def llama31_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    return hf_messages(messages, tool_results_as_json=True)


def none_content_for_calls(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """DeepSeek's templates test ``content is none`` for tool-calling messages: give them None, as
    OpenAI clients do (ggufd hands plugins ``""``)."""
    return [{**m, "content": None} if m.get("tool_calls") and not m["content"] else dict(m) for m in messages]


@dataclass(frozen=True)
class Family:
    """One built-in family as its tests see it. ``metadata()`` and ``model()`` build what its models
    look like (name, architecture, tokens), overridable per test."""

    name: str  # the family name detect_family answers and models carry ("gpt-oss")
    plugin: str  # the plugin's name, its module in ggufd/families/ ("gpt_oss")
    architecture: str | None
    model_name: str | None
    add_bos: bool | None  # tokenizer.ggml.add_bos_token; None: the key is absent
    bos_token: str
    eos_token: str
    stops: tuple[str, ...]  # what stop_sequences answers for model()
    template: str | None = None  # tokenizer.chat_template of metadata(); None: absent
    model_template: str | None = None  # that of model() when it differs from ``template``
    tool_call: str | None = None  # one call in the family's syntax; None: the family parses none
    variables: Mapping[str, Any] = field(default_factory=dict)  # for rendering its published template
    # ggufd's messages as the published template expects them (tool arguments as objects, ...)
    published_messages: Callable[[Sequence[Mapping[str, Any]]], list] = list
    frozen: Mapping[str, Any] = field(default_factory=dict)  # plugin attributes pinned in tests (the date)
    # families that share one tool-call syntax name it alike ("hermes"): each reads the other's calls
    tool_syntax: str | None = None

    def metadata(
        self,
        template: str | None = _KEEP,
        *,
        architecture: str | None = _KEEP,
        name: str | None = _KEEP,
        add_bos: bool | None = _KEEP,
        values: Mapping[str, Any] | None = None,
    ) -> GGUFMetadata:
        def pick(value, default):
            return default if value is _KEEP else value

        return gguf_metadata(
            pick(template, self.template),
            pick(architecture, self.architecture),
            values,
            name=pick(name, self.model_name),
            add_bos=pick(add_bos, self.add_bos),
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def model(self, family: str | None = None, meta: GGUFMetadata | None = None, model_id: str = "model") -> ModelInfo:
        """A model of this family (or labelled ``family``), with ``meta`` or the family's default metadata."""
        if meta is None:
            meta = self.metadata(self.model_template) if self.model_template is not None else self.metadata()
        return model_info(family or self.name, metadata=meta, model_id=model_id)

    def reference(self, source: str, messages, meta: GGUFMetadata | None = None, **variables) -> ChatPrompt:
        """``messages`` rendered with a published template, as ggufd renders a GGUF's own template
        (``meta`` defaults to the family's metadata carrying that template)."""
        converted = self.published_messages(messages)
        return render_template(source, converted, meta or self.metadata(source), **{**self.variables, **variables})

    def pin(self, plugin: ModuleType, monkeypatch) -> ModuleType:
        """Pin what would make the plugin's prompts vary from day to day."""
        for attribute, value in self.frozen.items():
            monkeypatch.setattr(plugin, attribute, value)
        return plugin


# --------------------------------------------------------------------------- the templates

QWEN25_TEMPLATE = template("qwen2.5-instruct")
GEMMA3_TEMPLATE = template("gemma-3-it")
LLAMA3_TEMPLATE = template("llama-3-instruct")
LLAMA31_TEMPLATE = template("llama-3.1-instruct")
MISTRAL_V3_TEMPLATE = template("mistral-7b-instruct-v0.3")
# Mistral-Nemo-Instruct-2407 (tekken): the same template without the spaces.
MISTRAL_TEKKEN_TEMPLATE = (
    MISTRAL_V3_TEMPLATE.replace('"[INST] "', '"[INST]"')
    .replace('"[TOOL_CALLS] ["', '"[TOOL_CALLS]["')
    .replace('{{- " " + message["content"]|trim + eos_token}}', '{{- message["content"] + eos_token}}')
    .replace("'[TOOL_RESULTS] {\"content\": '", "'[TOOL_RESULTS]{\"content\": '")
)
MISTRAL_V1_TEMPLATE = template("mistral-7b-instruct-v0.1")
MISTRAL_NEMO_TEMPLATE = template("mistral-nemo-instruct-2407")
MISTRAL_SMALL31_TEMPLATE = template("mistral-small-3.1-24b-instruct-2503")
MISTRAL_SMALL32_TEMPLATE = template("mistral-small-3.2-24b-instruct-2506")
DEVSTRAL_2507_TEMPLATE = template("devstral-small-2507-unsloth")
MAGISTRAL_2509_TEMPLATE = template("magistral-small-2509-unsloth")
MINISTRAL3_TEMPLATE = template("ministral-3-14b-reasoning-2512")
PHI35_TEMPLATE = template("phi-3.5-mini-instruct")
PHI4_TEMPLATE = template("phi-4")
PHI4_MINI_TEMPLATE = template("phi-4-mini-instruct")
R1_TEMPLATE = template("deepseek-r1")
DISTILL_TEMPLATE = template("deepseek-r1-distill-qwen")
DEEPSEEK_V2_TEMPLATE = template("deepseek-v2-chat")
HARMONY_TEMPLATE = template("gpt-oss")
HARMONY_FULL_TEMPLATE = template("gpt-oss-120b-full")
QWEN3_TEMPLATE = template("qwen3")
QWEN3_THINKING_TEMPLATE = template("qwen3-thinking-2507")
QWEN3_CODER_TEMPLATE = template("qwen3-coder")
QWEN35_TEMPLATE = template("qwen3.5")
GLM46_TEMPLATE = template("glm-4.6")
GLM45_AIR_TEMPLATE = template("glm-4.5-air")
KIMI_K2_TEMPLATE = template("kimi-k2-instruct")
KIMI_K2_THINKING_TEMPLATE = template("kimi-k2-thinking")

# --------------------------------------------------------------------------- the families

DEEPSEEK_BOS = "<｜begin▁of▁sentence｜>"
DEEPSEEK_EOS = "<｜end▁of▁sentence｜>"
GPT_OSS_DATE = "2025-08-05"  # the date harmony prompts carry in the tests
MISTRAL_DATE = "2025-09-17"  # the date in the default system prompts of Mistral Small 3.x in the tests

CHATML = Family(
    name="chatml",
    plugin="chatml",
    architecture="qwen2",
    model_name="Qwen2.5 7B Instruct",
    add_bos=False,
    bos_token="<|endoftext|>",
    eos_token="<|im_end|>",
    stops=("<|im_end|>", "<|im_start|>", "<|endoftext|>"),
    tool_call='<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
    published_messages=hf_messages,
    tool_syntax="hermes",
)
DEEPSEEK = Family(
    name="deepseek",
    plugin="deepseek",
    architecture="deepseek2",
    model_name="DeepSeek V3",
    add_bos=True,
    bos_token=DEEPSEEK_BOS,
    eos_token=DEEPSEEK_EOS,
    stops=(DEEPSEEK_EOS, "<｜User｜>"),
    tool_call=(
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>' + DEEPSEEK_EOS
    ),
    published_messages=none_content_for_calls,
)
GEMMA = Family(
    name="gemma",
    plugin="gemma",
    architecture="gemma3",
    model_name="Gemma 3 270m",
    add_bos=True,
    bos_token="<bos>",
    eos_token="<eos>",
    stops=("<end_of_turn>", "<start_of_turn>"),
)
GLM = Family(
    name="glm",
    plugin="glm",
    architecture="glm4moe",
    model_name="GLM 4.6",
    add_bos=False,  # llama.cpp adds no BOS to GLM vocabularies: the prompt starts with [gMASK]
    bos_token="[gMASK]",
    eos_token="<|endoftext|>",
    stops=("<|user|>", "<|observation|>", "<|endoftext|>"),
    template=GLM46_TEMPLATE,
    tool_call="<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
    published_messages=hf_messages,
)
GPT_OSS = Family(
    name="gpt-oss",
    plugin="gpt_oss",
    architecture="gpt-oss",
    model_name="Gpt Oss 20b",
    add_bos=False,
    bos_token="<|startoftext|>",
    eos_token="<|return|>",
    stops=("<|return|>", "<|call|>"),
    template=HARMONY_TEMPLATE,
    tool_call='<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
    variables={"strftime_now": lambda fmt: GPT_OSS_DATE},
    frozen={"today": lambda: GPT_OSS_DATE},
)
KIMI_K2 = Family(
    name="kimi-k2",
    plugin="kimi_k2",
    architecture="deepseek2",
    model_name="Kimi K2 Thinking",
    add_bos=False,
    bos_token="[BOS]",
    eos_token="[EOS]",
    stops=("<|im_end|>", "[EOS]"),
    template=KIMI_K2_THINKING_TEMPLATE,
    tool_call=(
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
        '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>'
    ),
)
LLAMA3 = Family(
    name="llama3",
    plugin="llama3",
    architecture="llama",
    model_name="Meta Llama 3.1 8B Instruct",
    add_bos=True,
    bos_token="<|begin_of_text|>",
    eos_token="<|eot_id|>",
    stops=("<|eot_id|>", "<|eom_id|>", "<|start_header_id|>"),
    tool_call='{"name": "f", "parameters": {}}',
    published_messages=llama31_messages,
)
MISTRAL = Family(
    name="mistral",
    plugin="mistral",
    architecture="llama",
    model_name="Mistral 7B Instruct v0.3",
    add_bos=True,
    bos_token="<s>",
    eos_token="</s>",
    stops=("</s>", "[INST]"),
    model_template=MISTRAL_V3_TEMPLATE,
    tool_call='[TOOL_CALLS][{"name": "f", "arguments": {}}]',
    variables={"strftime_now": lambda fmt: MISTRAL_DATE},
    published_messages=hf_messages,
    frozen={"today": lambda: MISTRAL_DATE},
)
PHI = Family(
    name="phi",
    plugin="phi",
    architecture="phi3",
    model_name="Phi 3.5 Mini Instruct",
    add_bos=None,
    bos_token="<s>",
    eos_token="<|endoftext|>",
    stops=("<|end|>", "<|user|>", "<|endoftext|>"),
)

QWEN3 = Family(
    name="qwen3",
    plugin="qwen3",
    architecture="qwen3",
    model_name="Qwen3 8B",
    add_bos=False,
    bos_token="<|endoftext|>",
    eos_token="<|im_end|>",
    stops=("<|im_end|>", "<|im_start|>", "<|endoftext|>"),
    tool_call='<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    published_messages=hf_messages,
    tool_syntax="hermes",
)
QWEN3_CODER = Family(
    name="qwen3-coder",
    plugin="qwen3_coder",
    architecture="qwen3moe",
    model_name="Qwen3 Coder 30B A3B Instruct",
    add_bos=False,
    bos_token="<|endoftext|>",
    eos_token="<|im_end|>",
    stops=("<|im_end|>", "<|im_start|>", "<|endoftext|>"),
    template=QWEN3_CODER_TEMPLATE,
    tool_call="<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
    published_messages=hf_messages,
)

#: by plugin name, in the order the plugin manager registers them
FAMILIES = {
    family.plugin: family
    for family in (CHATML, DEEPSEEK, GEMMA, GLM, GPT_OSS, KIMI_K2, LLAMA3, MISTRAL, PHI, QWEN3, QWEN3_CODER)
}

# --------------------------------------------------------------------------- published templates to match

#: plain-text chats (no tools): every family renders each of them exactly as its published templates
#: do (test_family_contract.py); the family modules use them for their end-to-end checks too
ODD_CONTENT = [
    {"role": "system", "content": "Sys line 1\nSys line 2"},
    {"role": "user", "content": "  padded user text \n"},
    {"role": "assistant", "content": "\n answer with spaces  "},
    {"role": "user", "content": "multi\nline\n\ncontent"},
    {"role": "assistant", "content": "日本語 😀 café"},
    {"role": "user", "content": "<b>tags</b> & {{ braces }} {% not jinja %}"},
]
HELPFUL_MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a colour."},
]
TEXT_CHATS = {
    "one-user-message": [{"role": "user", "content": "Hi"}],
    "system-and-user": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "terse-system": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    "pirate-system": [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}],
    "multi-turn": HELPFUL_MULTI_TURN,
    "short-multi-turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ],
    "treasure-multi-turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy"},
        {"role": "user", "content": "Where is the treasure?"},
    ],
    "system-then-multi-turn": [{"role": "system", "content": "Be brief."}, *HELPFUL_MULTI_TURN],
    "odd-content": ODD_CONTENT,
    "odd-content-spaces-after-system": [{"role": "system", "content": "Sys line 1\nSys line 2  "}, *ODD_CONTENT[1:]],
    "odd-content-plain-answer": [*ODD_CONTENT[:2], {"role": "assistant", "content": "plain answer"}, *ODD_CONTENT[3:]],
    "odd-content-with-reasoning": [
        *ODD_CONTENT[:2],
        {"role": "assistant", "content": "<think>\nreasoning\n</think>\n\n answer with spaces  "},
        *ODD_CONTENT[3:],
    ],
}


@dataclass(frozen=True)
class Published:
    """A published template a family's prompts must equal byte for byte, with the metadata of the
    model that carries it (``meta``; the reference is rendered with ``reference_meta`` when given)."""

    family: Family
    variant: str
    source: str
    meta: GGUFMetadata
    reference_meta: GGUFMetadata | None = None

    @property
    def id(self) -> str:
        return f"{self.family.plugin}-{self.variant}"

    def model(self) -> ModelInfo:
        return self.family.model(meta=self.meta)

    def reference(self, messages, **variables) -> ChatPrompt:
        return self.family.reference(self.source, messages, self.reference_meta or self.meta, **variables)


MISTRAL_TEKKEN_PRE = {"tokenizer.ggml.pre": "tekken"}


def mistral_v7(source: str, name: str, architecture: str = "llama") -> Published:
    """A Mistral model of 2025 (``[SYSTEM_PROMPT]`` templates, tekken vocabularies)."""
    variant = name.lower().replace(" ", "-")
    meta = MISTRAL.metadata(source, name=name, architecture=architecture, values=MISTRAL_TEKKEN_PRE)
    return Published(MISTRAL, variant, source, meta)


MISTRAL_V7 = (
    mistral_v7(MISTRAL_SMALL31_TEMPLATE, "Mistral Small 3.1 24B Instruct 2503"),
    mistral_v7(MISTRAL_SMALL32_TEMPLATE, "Mistral Small 3.2 24B Instruct 2506", "mistral3"),
    mistral_v7(DEVSTRAL_2507_TEMPLATE, "Devstral Small 2507"),
    mistral_v7(MAGISTRAL_2509_TEMPLATE, "Magistral Small 2509"),
    mistral_v7(MINISTRAL3_TEMPLATE, "Ministral 3 14B Reasoning 2512", "mistral3"),
)

PUBLISHED = (
    Published(
        CHATML,
        "qwen2.5",
        QWEN25_TEMPLATE,
        CHATML.metadata(QWEN25_TEMPLATE, name="Qwen2.5 7B Instruct", architecture="qwen2"),
        reference_meta=CHATML.metadata(QWEN25_TEMPLATE, architecture="qwen2"),
    ),
    Published(
        DEEPSEEK,
        "r1",
        R1_TEMPLATE,
        DEEPSEEK.metadata(R1_TEMPLATE, name="DeepSeek R1"),
        reference_meta=DEEPSEEK.metadata(R1_TEMPLATE),
    ),
    Published(
        DEEPSEEK,
        "distill",
        DISTILL_TEMPLATE,
        DEEPSEEK.metadata(DISTILL_TEMPLATE, architecture="qwen2", name="DeepSeek R1 Distill Qwen 32B"),
        reference_meta=DEEPSEEK.metadata(DISTILL_TEMPLATE),
    ),
    Published(GEMMA, "gemma3", GEMMA3_TEMPLATE, GEMMA.metadata()),
    Published(GLM, "glm-4.6", GLM46_TEMPLATE, GLM.metadata()),
    Published(GLM, "glm-4.5-air", GLM45_AIR_TEMPLATE, GLM.metadata(GLM45_AIR_TEMPLATE, name="GLM 4.5 Air")),
    Published(GPT_OSS, "harmony", HARMONY_TEMPLATE, GPT_OSS.metadata()),
    Published(GPT_OSS, "harmony-tools", HARMONY_FULL_TEMPLATE, GPT_OSS.metadata(HARMONY_FULL_TEMPLATE)),
    Published(KIMI_K2, "instruct", KIMI_K2_TEMPLATE, KIMI_K2.metadata(KIMI_K2_TEMPLATE, name="Kimi K2 Instruct")),
    Published(KIMI_K2, "thinking", KIMI_K2_THINKING_TEMPLATE, KIMI_K2.metadata()),
    Published(LLAMA3, "llama3", LLAMA3_TEMPLATE, LLAMA3.metadata(LLAMA3_TEMPLATE)),
    Published(LLAMA3, "llama3.1", LLAMA31_TEMPLATE, LLAMA3.metadata(LLAMA31_TEMPLATE)),
    Published(MISTRAL, "v0.3", MISTRAL_V3_TEMPLATE, MISTRAL.metadata(MISTRAL_V3_TEMPLATE)),
    Published(
        MISTRAL,
        "nemo",
        MISTRAL_TEKKEN_TEMPLATE,
        MISTRAL.metadata(MISTRAL_TEKKEN_TEMPLATE, name="Mistral Nemo Instruct 2407", values=MISTRAL_TEKKEN_PRE),
    ),
    Published(
        MISTRAL, "v0.1", MISTRAL_V1_TEMPLATE, MISTRAL.metadata(MISTRAL_V1_TEMPLATE, name="Mistral 7B Instruct v0.1")
    ),
    Published(
        MISTRAL,
        "nemo-2407",
        MISTRAL_NEMO_TEMPLATE,
        MISTRAL.metadata(MISTRAL_NEMO_TEMPLATE, name="Mistral Nemo Instruct 2407", values=MISTRAL_TEKKEN_PRE),
    ),
    *MISTRAL_V7,
    Published(PHI, "phi3", PHI35_TEMPLATE, PHI.metadata(PHI35_TEMPLATE, name=None)),
    Published(PHI, "phi4", PHI4_TEMPLATE, PHI.metadata(PHI4_TEMPLATE, name=None)),
    Published(PHI, "phi4-mini", PHI4_MINI_TEMPLATE, PHI.metadata(PHI4_MINI_TEMPLATE, name=None)),
    Published(QWEN3, "qwen3", QWEN3_TEMPLATE, QWEN3.metadata(QWEN3_TEMPLATE)),
    Published(
        QWEN3,
        "thinking-2507",
        QWEN3_THINKING_TEMPLATE,
        QWEN3.metadata(QWEN3_THINKING_TEMPLATE, name="Qwen3 4B Thinking 2507"),
    ),
    Published(QWEN3_CODER, "coder", QWEN3_CODER_TEMPLATE, QWEN3_CODER.metadata()),
    Published(
        QWEN3_CODER,
        "qwen3.5",
        QWEN35_TEMPLATE,
        QWEN3_CODER.metadata(QWEN35_TEMPLATE, architecture="qwen35", name="Qwen3.5 4B"),
    ),
)


def published(plugin: str, variant: str) -> Published:
    return next(p for p in PUBLISHED if p.family.plugin == plugin and p.variant == variant)
