"""ggufd: serve local GGUF models over an OpenAI-compatible HTTP API.

This module is the public plugin API: ``hookimpl`` to mark hook implementations,
the types that cross the hook boundary, and the errors a plugin may raise.
"""

import pluggy

from ggufd.errors import ApiError, InvalidRequest
from ggufd.gguf_metadata import GGUFMetadata
from ggufd.protocol.tools import tool_arguments, tool_call
from ggufd.reasoning import ReasoningFilter, thinking_switch
from ggufd.tool_calls import Block, MarkedCalls, OpenerGate, json_call_block
from ggufd.types import ChatPrompt, ModelInfo, ModelSpec, ReasoningSyntax, ToolCallDelta

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("ggufd")

__all__ = [
    "ApiError",
    "Block",
    "ChatPrompt",
    "GGUFMetadata",
    "InvalidRequest",
    "MarkedCalls",
    "ModelInfo",
    "ModelSpec",
    "OpenerGate",
    "ReasoningFilter",
    "ReasoningSyntax",
    "ToolCallDelta",
    "__version__",
    "hookimpl",
    "json_call_block",
    "thinking_switch",
    "tool_arguments",
    "tool_call",
]
