"""The engine as the upper layers see it: a narrow, typed contract (vLLM's ``EngineClient``).

The HTTP and protocol layers use an engine only through these methods, so tests can put
:class:`ggufd.engine.fake.FakeEngine` in its place and run the whole API in-process with no
llama.cpp. :class:`ggufd.engine.lifecycle.Engine` is the real implementation.

A generation is an async iterator of event *batches*: each item is the list of events that
arrived since the last one (:mod:`ggufd.engine.events`: ``Started``, then ``TextDelta`` /
``TokenLogprob``, then ``Finished`` or ``Failed``). Batches, not single events, so that a
handler writes and flushes once per batch when the client reads slower than the model writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ggufd.types import GenerationRequest, ModelInfo

if TYPE_CHECKING:
    from ggufd.engine.devices import DeviceExecutors
    from ggufd.engine.gpu import GpuReport


class GenerationHandle(Protocol):
    """One queued generation: iterate it for event batches; cancel it from anywhere."""

    done: bool

    def __aiter__(self) -> AsyncIterator[list]: ...

    async def __anext__(self) -> list: ...

    async def next_events(self) -> list: ...

    def cancel(self) -> None: ...


class ModelSettings(Protocol):
    """The load settings that the API shows (``config.LlamaSettings`` has more)."""

    n_ctx: int
    parallel: int
    embedding: bool


class EngineClient(Protocol):
    """What the HTTP layer may ask of an engine. Call every method on the event loop."""

    def generate(self, info: ModelInfo, request: GenerationRequest) -> GenerationHandle:
        """Queue a generation; raises :class:`ggufd.errors.Overloaded` when the model's queue is full.
        Errors found while admitting it (context too long, load failure) arrive as a ``Failed`` event
        before ``Started``."""
        ...

    async def tokenize(self, info: ModelInfo, text: str, add_bos: bool) -> list[int]: ...

    async def detokenize(self, info: ModelInfo, tokens: list[int]) -> str: ...

    async def token_pieces(self, info: ModelInfo, tokens: list[int]) -> list[bytes]:
        """Each token's bytes on its own (special tokens as their text), as llama.cpp's
        ``/tokenize`` ``with_pieces`` gives them."""
        ...

    async def embed(self, info: ModelInfo, inputs: list) -> tuple[list[list[float]], int]:
        """-> (one vector per input, prompt tokens used)."""
        ...

    async def load(self, info: ModelInfo) -> None: ...

    async def unload(self, model_id: str) -> bool:
        """False when the model is busy (it is never unloaded under a request)."""
        ...

    def settings_for(self, info: ModelInfo) -> ModelSettings:
        """The settings the model is (or will be) loaded with."""
        ...

    def is_embedding_model(self, info: ModelInfo) -> bool: ...

    def status(self) -> dict[str, dict]:
        """Per model that has been used: state, device, pending requests, memory estimate."""
        ...

    def loaded_models(self) -> list[str]: ...

    def pending(self) -> int:
        """Requests queued or running, over all models."""
        ...

    @property
    def gpu_available(self) -> bool: ...

    def gpu_report(self) -> GpuReport: ...

    @property
    def devices(self) -> DeviceExecutors: ...

    def update_models(self, models: Mapping[str, ModelInfo], settings_for: Any, limits: Any) -> None:
        """After a reload: new settings apply on the next load; removed models go once idle."""
        ...

    def check_files(self) -> list[str]:
        """Compare each loaded model's file with the one it was loaded from; protect the models whose
        file changed (no new work, unloaded once unused) and return their ids."""
        ...

    async def close(self) -> None:
        """Free every model and stop the device threads."""
        ...
