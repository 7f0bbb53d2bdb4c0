"""The engine: model lifecycle and scheduling, on the event loop; llama work on device threads.

For every served model the engine keeps a :class:`ModelSlot` (state, queue depth, memory
need, last use). A request becomes a :class:`Generation`; its task

1. waits until the model is loaded — loading it if needed, after evicting idle models
   (least recently used first) when ``max_loaded_models`` or the device's
   ``memory_budget`` would be exceeded; concurrent requests share one load;
2. runs the generation on the model's device thread (:mod:`ggufd.engine.devices`), FIFO.

A model with running or queued requests is never unloaded, so no request ever runs on a
freed model.

A loaded model's file is watched (:mod:`ggufd.file_stamps`): :meth:`Engine.check_files` (polled)
and every request compare the file with the stamp taken when the model was loaded. On a change
the slot turns *stale* (no new work starts on the old model; it is unloaded once the requests
running on it are done) and *changing* (nothing loads the file until the registry has re-read it,
:meth:`Engine.update_models`, or it has been still for ``FILE_SETTLE_SECONDS``). New requests wait
meanwhile, at most ``FILE_WAIT_SECONDS``, then get a 503. A file written in place under a model
that maps its weights (``mmap = true``) is the dangerous case: its running generations are
cancelled at once, since their next step reads the changed pages. Results reach the loop with ``call_soon_threadsafe``. Nothing here imports HTTP or
a wire format (``tests/test_layers.py`` checks it); the errors a client sees are :mod:`ggufd.errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import structlog

from ggufd.engine.devices import DeviceExecutors, Placement, placement_for
from ggufd.engine.events import Failed, Finished, Generation
from ggufd.engine.gpu import GpuReport, gpu_report
from ggufd.engine.llama_log import LoadError, configure_llama, gpu_startup_problems
from ggufd.engine.memory import estimate_model_bytes
from ggufd.engine.model import free_model, load_model
from ggufd.errors import ApiError, ModelLoadFailed, ModelNotFound, ModelTooLarge, Overloaded, ServerError
from ggufd.file_stamps import FileStamp, changed_in_place, file_stamp
from ggufd.sizes import format_bytes
from ggufd.types import GenerationRequest, ModelInfo

log = structlog.get_logger("ggufd.engine")


class ModelState(StrEnum):
    """Where a served model is in its lifecycle; ``/health`` shows the value."""

    UNLOADED = "unloaded"
    LOADING = "loading"  # a load is running on the device thread (``ModelSlot.transition`` is set)
    LOADED = "loaded"
    UNLOADING = "unloading"  # being freed on the device thread (``ModelSlot.transition`` is set)
    FAILED = "failed"  # the last load failed; ``ModelSlot.load_error`` says why, until a reload or unload


#: States in which a model holds, or is about to hold or release, memory on its device.
_RESIDENT = (ModelState.LOADING, ModelState.LOADED, ModelState.UNLOADING)
#: States that end with ``ModelSlot.transition``.
_IN_TRANSITION = (ModelState.LOADING, ModelState.UNLOADING)
#: A changed file that nobody re-read counts as complete once its stamp has not moved for this long.
FILE_SETTLE_SECONDS = 5.0
#: The longest a request waits for a changed model file to settle and load; then 503 + Retry-After.
FILE_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Limits:
    """Scheduling limits (from the config; replaced on reload)."""

    max_loaded_models: int = 0  # 0 = no limit
    memory_budget: Mapping[str, int] = field(default_factory=dict)  # device -> bytes; "*" = every device
    max_queue: int = 32
    keep_alive: float = -1  # seconds; 0 = unload right after use; -1 = never

    def budget_for(self, device: str) -> int | None:
        return self.memory_budget.get(device, self.memory_budget.get("*"))


@dataclass
class ModelSlot:
    info: ModelInfo
    settings: Any  # config.LlamaSettings
    placement: Placement
    need_bytes: int
    max_queue: int
    keep_alive: float
    state: ModelState = ModelState.UNLOADED
    llama: Any = None  # touched only on the device thread
    progress: float = 0.0
    pending: int = 0  # queued + running requests
    last_used: float = 0.0
    load_error: ApiError | None = None
    transition: asyncio.Future | None = None  # set while loading/unloading
    retired: bool = False  # removed from the registry; unloaded once idle
    idle_timer: asyncio.TimerHandle | None = None
    # the model file (see the module docstring)
    stamp: FileStamp | None = None  # the file as the loaded model read it (taken before the load)
    mapped: bool = False  # the loaded model maps its weights from the file
    stale: bool = False  # the loaded model is not its file's current content: unloaded once unused
    changing: bool = False  # the file changed and was not re-read yet: nothing loads or starts
    changing_stamp: FileStamp | None = None  # the last stamp seen while changing, and since when
    changing_since: float = 0.0
    using: int = 0  # requests running on the loaded model (past the wait for it)
    generations: set[Generation] = field(default_factory=set)  # the generations among them

    @property
    def id(self) -> str:
        return self.info.id

    def describe(self) -> dict:
        data = {
            "state": self.state.value,
            "device": self.placement.device,
            "parallel": self.settings.parallel,
            "pending": self.pending,
            "memory_estimate_bytes": self.need_bytes,
        }
        if self.state == ModelState.LOADING:
            data["progress"] = round(self.progress * 100, 1)
        if self.state == ModelState.LOADED:
            layers = (self.info.metadata.get(f"{self.info.metadata.architecture}.block_count") or 0) + 1
            data["offloaded_layers"] = (
                min(self.placement.n_gpu_layers, layers) if self.placement.n_gpu_layers >= 0 else layers
            )
            data["total_layers"] = layers
        if self.load_error is not None:
            data["error"] = self.load_error.message
        if self.stale or self.changing:
            data["file_changed"] = True
        return data


def embedding_aware(settings, info: ModelInfo):
    """A GGUF that names a pooling type is an embedding model, whatever the config says; an
    embedding model decodes one input at a time (``parallel`` 1)."""
    pooling = info.metadata.get(f"{info.metadata.architecture}.pooling_type")
    if pooling is not None and pooling != 0:
        settings = replace(settings, embedding=True, gguf_pooling=True)
    return replace(settings, parallel=1) if settings.embedding else settings


def _transition_of(slot: ModelSlot) -> asyncio.Future:
    """The running load or unload of a slot, shielded: a waiter that is cancelled does not cancel it."""
    assert slot.transition is not None  # set while the slot is loading or unloading
    return asyncio.shield(slot.transition)


class Engine:
    def __init__(
        self,
        settings_for: Callable[[ModelInfo], Any],
        limits: Limits | None = None,
        *,
        gpu_available: bool | None = None,
        llama_log_level: str = "warn",
        loader: Callable = load_model,
        on_load: Callable[[str, float], None] | None = None,
    ) -> None:
        self._settings_for = settings_for
        self._on_load = on_load
        self.limits = limits or Limits()
        self._loader = loader
        self._llama_log_level = llama_log_level
        self._gpu_available = gpu_available
        self._gpu_report: GpuReport | None = None
        self._configured = False
        self._slots: dict[str, ModelSlot] = {}
        self._devices = DeviceExecutors()
        self._capacity_changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- public API (call on the event loop)

    @property
    def gpu_available(self) -> bool:
        if self._gpu_available is None:
            self._gpu_available = self.gpu_report().offload
        return self._gpu_available

    def gpu_report(self) -> GpuReport:
        """What GPUs llama.cpp can use, and if none, why; asked once."""
        if self._gpu_report is None:
            self._configure_llama()  # first: llama.cpp's GPU start-up errors go to the log and the report
            self._gpu_report = gpu_report(gpu_startup_problems())
        return self._gpu_report

    def _configure_llama(self) -> None:
        if not self._configured:
            configure_llama(self._llama_log_level)
            self._configured = True

    def generate(self, info: ModelInfo, request: GenerationRequest) -> Generation:
        """Queue a generation and return its handle (an async iterator of event batches);
        raises :class:`~ggufd.errors.Overloaded` when the model's queue is full."""
        return self.start(info, request)

    async def tokenize(self, info: ModelInfo, text: str, add_bos: bool) -> list[int]:
        """``text`` as the model's token ids (special tokens parsed), loading the model if needed."""
        return await self.with_model(info, lambda loaded: loaded.tokenize(text, add_bos))

    async def detokenize(self, info: ModelInfo, tokens: list[int]) -> str:
        """Token ids back to text, loading the model if needed."""
        return await self.with_model(info, lambda loaded: loaded.detokenize(tokens))

    async def token_pieces(self, info: ModelInfo, tokens: list[int]) -> list[bytes]:
        """Each token's bytes (special tokens as their text), loading the model if needed."""
        return await self.with_model(info, lambda loaded: [loaded.token_text(token) for token in tokens])

    def start(self, info: ModelInfo, request: GenerationRequest, generation: Generation | None = None) -> Generation:
        """Queue a generation; raises :class:`Overloaded` when the model's queue is full."""
        slot = self._slot(info)
        running = slot.settings.parallel
        if slot.pending >= running + slot.max_queue:
            raise Overloaded(
                f"The model '{info.id}' has {slot.pending - running} requests waiting, its queue limit; try again shortly."
            )
        generation = generation or Generation(asyncio.get_running_loop())
        slot.pending += 1
        self._spawn(self._run(slot, generation, request))
        return generation

    async def load(self, info: ModelInfo) -> None:
        """Load a model now (admin route, preload); evicts idle models if needed."""
        slot = self._slot(info)
        slot.pending += 1
        try:
            await self._ensure_loaded(slot, None)
        finally:
            self._release(slot)

    async def with_model(self, info: ModelInfo, fn: Callable[[Any], Any]) -> Any:
        """Run a read-only ``fn(loaded_model)`` (tokenizing) in a worker thread, with the model
        loaded and pinned (it cannot be freed meanwhile). Not on the device thread: the vocabulary
        is immutable, and a running batch must not make a token count wait."""
        slot = self._slot(info)
        slot.pending += 1
        using = False
        try:
            await self._ensure_loaded(slot, None)
            slot.using, using = slot.using + 1, True
            return await asyncio.to_thread(fn, slot.llama)
        finally:
            if using:
                self._done_using(slot)
            self._release(slot)

    def settings_for(self, info: ModelInfo):
        """The load settings a model gets: its config, adjusted for embedding models."""
        return embedding_aware(self._settings_for(info), info)

    def is_embedding_model(self, info: ModelInfo) -> bool:
        return self.settings_for(info).embedding

    async def embed(self, info: ModelInfo, inputs: list) -> tuple[list[list[float]], int]:
        """Embeddings on the model's device thread (the context is not thread-safe)."""
        slot = self._slot(info)
        slot.pending += 1
        using = False
        try:
            await self._ensure_loaded(slot, None)
            slot.using, using = slot.using + 1, True
            return await self._devices.run(slot.placement.device, slot.llama.embed, inputs)
        finally:
            if using:
                self._done_using(slot)
            self._release(slot)

    async def unload(self, model_id: str) -> bool:
        """Unload an idle model. Returns False if it is busy (it is never unloaded under a request)."""
        slot = self._slots.get(model_id)
        if slot is None:
            return True
        while slot.state in _IN_TRANSITION:
            await _transition_of(slot)
        if slot.pending:
            return False
        if slot.state == ModelState.LOADED:
            await self._unload(slot)
        elif slot.state == ModelState.FAILED:
            slot.state, slot.load_error = ModelState.UNLOADED, None
        return True

    def update_models(self, models: Mapping[str, ModelInfo], settings_for: Callable, limits: Limits) -> None:
        """After a reload (or a re-read of changed model files): new settings and files apply on the
        next load; removed models go once idle."""
        self._settings_for = settings_for
        self.limits = limits
        for model_id, slot in list(self._slots.items()):
            info = models.get(model_id)
            if info is None:
                slot.retired = True
                self._maybe_unload_idle(slot)
                continue
            self._file_changed(slot)  # a loaded model whose file the registry read anew is stale
            slot.retired = False
            slot.info = info
            slot.changing = False  # the registry has read the file as it is now
            slot.max_queue = info.options.get("max_queue", limits.max_queue)
            slot.keep_alive = info.options.get("keep_alive", limits.keep_alive)
            if slot.state == ModelState.FAILED:  # the file may have been fixed
                slot.state, slot.load_error = ModelState.UNLOADED, None
        self._notify_capacity()

    def check_files(self) -> list[str]:
        """Compare every loaded model's file with the stamp it was loaded from (one ``stat`` each)
        and act on a change (module docstring); the ids whose file changed now."""
        changed = []
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.changing:
                stamp = file_stamp(slot.info.path)
                if stamp != slot.changing_stamp:
                    slot.changing_stamp, slot.changing_since = stamp, now
                elif now - slot.changing_since >= FILE_SETTLE_SECONDS:
                    log.info("model file is still again; loading it on the next request", model=slot.id)
                    slot.changing = False
                    self._notify_capacity()
            elif self._file_changed(slot):
                changed.append(slot.id)
        return changed

    def status(self) -> dict[str, dict]:
        return {model_id: slot.describe() for model_id, slot in self._slots.items()}

    def loaded_models(self) -> list[str]:
        return sorted(mid for mid, slot in self._slots.items() if slot.state == ModelState.LOADED)

    @property
    def devices(self) -> DeviceExecutors:
        return self._devices

    def pending(self) -> int:
        return sum(slot.pending for slot in self._slots.values())

    async def close(self) -> None:
        """Free every model (after running work finishes) and stop the device threads."""
        for slot in list(self._slots.values()):
            while slot.state in _IN_TRANSITION:
                await _transition_of(slot)
            if slot.state == ModelState.LOADED:
                await self._unload(slot)
        self._slots.clear()
        await asyncio.to_thread(self._devices.shutdown)

    # --- slots

    def _new_slot(self, info: ModelInfo) -> ModelSlot:
        slot = ModelSlot(
            info=info,
            settings=None,
            placement=Placement("cpu", 0),
            need_bytes=0,
            max_queue=info.options.get("max_queue", self.limits.max_queue),
            keep_alive=info.options.get("keep_alive", self.limits.keep_alive),
        )
        self._apply_settings(slot)
        return slot

    def _apply_settings(self, slot: ModelSlot) -> None:
        """(Re)compute load settings, placement and memory need from the slot's current info.
        Done while the model is not loaded, so changed settings apply on the next load."""
        settings = self.settings_for(slot.info)
        slot.settings = settings
        slot.placement = placement_for(slot.info.options, settings.n_gpu_layers, self.gpu_available, slot.id)
        slot.need_bytes = estimate_model_bytes(
            slot.info.metadata,
            slot.info.path,
            settings.n_ctx,
            settings.parallel,
            swa_full=settings.swa_full,
            n_ubatch=settings.n_batch,
        )

    def _slot(self, info: ModelInfo) -> ModelSlot:
        slot = self._slots.get(info.id)
        if slot is None:
            self._configure_llama()
            slot = self._slots[info.id] = self._new_slot(info)
        return slot

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _capacity(self) -> asyncio.Event:
        if self._capacity_changed is None:
            self._capacity_changed = asyncio.Event()
        return self._capacity_changed

    def _notify_capacity(self) -> None:
        event = self._capacity()
        event.set()
        self._capacity_changed = asyncio.Event()

    def _done_using(self, slot: ModelSlot) -> None:
        slot.using -= 1
        if slot.using == 0 and slot.stale:
            self._maybe_unload_idle(slot)

    def _release(self, slot: ModelSlot) -> None:
        slot.pending -= 1
        slot.last_used = time.monotonic()
        if slot.pending == 0:
            self._notify_capacity()
            self._maybe_unload_idle(slot)

    # --- one request

    async def _run(self, slot: ModelSlot, generation: Generation, request: GenerationRequest) -> None:
        final: Finished | Failed = Finished("cancelled", 0, 0)
        using = False
        try:
            await self._ensure_loaded(slot, generation)
            if not generation.cancelled:
                slot.using, using = slot.using + 1, True
                slot.generations.add(generation)
                runner = slot.llama.runner
                tokens = await asyncio.to_thread(runner.prepare, request)  # not on the device thread
            if not generation.cancelled:
                future, start = runner.submit(generation, request, tokens)
                if start:  # the model's batch is idle: step it on the device thread, in turn with others
                    self._devices.drive(slot.placement.device, runner.step)
                final = await asyncio.wrap_future(future)
        except ApiError as exc:
            final = Failed(exc)
        except Exception:
            log.exception("generation failed", model=slot.id)
            final = Failed(ServerError())
        finally:
            # Release the slot before the caller learns the request is over, so that whatever
            # the client does next (another request, an unload) sees the model idle.
            if using:
                slot.generations.discard(generation)
                self._done_using(slot)
            self._release(slot)
            generation.emit(final)

    # --- loading and eviction

    async def _ensure_loaded(self, slot: ModelSlot, generation: Generation | None) -> None:
        waiting_since: float | None = None
        while True:
            if generation is not None and generation.cancelled:
                return
            if slot.stale or slot.changing:  # the file changed: wait for the old model to go, the new file to settle
                if slot.retired:
                    raise ModelNotFound(
                        slot.id, f"The model '{slot.id}' is no longer served: its file changed and cannot be read."
                    )
                now = time.monotonic()
                waiting_since = waiting_since or now
                if now - waiting_since > FILE_WAIT_SECONDS:
                    raise Overloaded(f"The file of the model '{slot.id}' is being replaced; try again shortly.", 5)
                await self._wait_for_capacity(0.25)
                continue
            if slot.state == ModelState.LOADED:
                if not self._file_changed(slot):  # a stat per request: no work starts on a changed file
                    return
                continue
            if slot.state == ModelState.FAILED:
                assert slot.load_error is not None  # set with the FAILED state
                raise slot.load_error
            if slot.state in _IN_TRANSITION:
                await _transition_of(slot)
                continue
            self._apply_settings(slot)
            if not await self._make_room(slot, generation):
                continue  # waited for capacity; look again
            await self._load(slot)

    async def _make_room(self, slot: ModelSlot, generation: Generation | None) -> bool:
        """Evict idle models until ``slot`` fits. True when it fits now (nothing awaited since
        the last check); False after waiting, so the caller re-checks the slot's state."""
        device = slot.placement.device
        budget = self.limits.budget_for(device)
        if budget is not None and slot.need_bytes > budget:
            raise ModelTooLarge(slot.id, slot.need_bytes, budget, device)
        while True:
            resident = [s for s in self._slots.values() if s.state in _RESIDENT and s is not slot]
            over_count = self.limits.max_loaded_models and len(resident) >= self.limits.max_loaded_models
            used = sum(s.need_bytes for s in resident if s.placement.device == device)
            over_budget = budget is not None and used + slot.need_bytes > budget
            if not over_count and not over_budget:
                return True
            candidates = [
                s
                for s in resident
                if s.state == ModelState.LOADED and s.pending == 0 and (over_count or s.placement.device == device)
            ]
            if candidates:
                victim = min(candidates, key=lambda s: s.last_used)
                log.info(
                    "evicting idle model",
                    model=victim.id,
                    for_model=slot.id,
                    reason="max_loaded_models" if over_count else "memory_budget",
                )
                await self._unload(victim)
                return False
            # Everything resident is busy: wait until a model becomes idle (or the client leaves).
            await self._wait_for_capacity(0.25)
            return False

    async def _wait_for_capacity(self, timeout: float) -> None:
        waiter = self._capacity()
        try:
            await asyncio.wait_for(waiter.wait(), timeout=timeout)
        except TimeoutError:
            pass

    async def _load(self, slot: ModelSlot) -> None:
        slot.state = ModelState.LOADING
        slot.progress = 0.0
        slot.transition = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        log.info(
            "loading model",
            model=slot.id,
            device=slot.placement.device,
            n_ctx=slot.settings.n_ctx,
            n_gpu_layers=slot.placement.n_gpu_layers,
            memory_estimate=format_bytes(slot.need_bytes),
        )
        logged = 0  # tenths of the load reported so far
        slot.stamp = file_stamp(slot.info.path)  # before the load: a change during it counts as a change
        slot.mapped = bool(getattr(slot.settings, "mmap", False))

        def on_progress(value: float) -> None:  # device thread
            nonlocal logged
            slot.progress = value
            step = int(value * 10)
            if step > logged:
                logged = step
                log.info("loading model progress", model=slot.id, percent=step * 10)

        try:
            slot.llama = await self._devices.run(
                slot.placement.device, self._loader, str(slot.info.path), slot.settings, slot.placement, on_progress
            )
        except Exception as exc:  # LoadError: llama.cpp's reason, when it gave one
            log.error("model failed to load", model=slot.id, error=str(exc))
            slot.state = ModelState.FAILED
            slot.load_error = ModelLoadFailed(slot.id, exc.reason if isinstance(exc, LoadError) else None)
            raise slot.load_error from None
        else:
            slot.state = ModelState.LOADED
            slot.last_used = time.monotonic()
            seconds = time.perf_counter() - started
            log.info("model loaded", model=slot.id, seconds=round(seconds, 3), device=slot.placement.device)
            if self._on_load is not None:
                self._on_load(slot.id, seconds)
            self._file_changed(slot)  # the file changed while it loaded: the model may be a mix
        finally:
            slot.transition.set_result(None)
            slot.transition = None
            self._notify_capacity()

    async def _unload(self, slot: ModelSlot) -> None:
        slot.stale = False  # what is loaded next is read from the file as it is then
        slot.state = ModelState.UNLOADING
        slot.transition = asyncio.get_running_loop().create_future()
        llama, slot.llama = slot.llama, None
        try:
            await self._devices.run(slot.placement.device, free_model, llama)
        finally:
            del llama
            slot.state = ModelState.UNLOADED
            slot.transition.set_result(None)
            slot.transition = None
            log.info("model unloaded", model=slot.id)
            if slot.retired and slot.pending == 0 and self._slots.get(slot.id) is slot:
                del self._slots[slot.id]
            self._notify_capacity()

    def _maybe_unload_idle(self, slot: ModelSlot) -> None:
        """keep_alive and retirement: unload a model once it has been idle long enough; a stale
        model as soon as no request runs on it (the waiting ones wait for the new file)."""
        if slot.idle_timer is not None:
            slot.idle_timer.cancel()
            slot.idle_timer = None
        if slot.stale and slot.using == 0 and slot.state == ModelState.LOADED:
            self._spawn(self._unload_stale(slot))
            return
        if slot.pending:
            return
        if slot.retired and slot.state in (ModelState.UNLOADED, ModelState.FAILED):
            if self._slots.get(slot.id) is slot:
                del self._slots[slot.id]
            return
        if slot.state != ModelState.LOADED:
            return
        delay = 0 if slot.retired else slot.keep_alive
        if delay < 0:
            return
        slot.idle_timer = asyncio.get_running_loop().call_later(delay, self._unload_if_still_idle, slot)

    def _unload_if_still_idle(self, slot: ModelSlot) -> None:
        slot.idle_timer = None
        if slot.pending == 0 and slot.state == ModelState.LOADED:
            log.info("unloading idle model", model=slot.id, keep_alive=slot.keep_alive, retired=slot.retired)
            self._spawn(self._unload(slot))

    # --- model files

    def _file_changed(self, slot: ModelSlot) -> bool:
        """Stat a loaded model's file; on a change, protect the model and say True."""
        if slot.state != ModelState.LOADED or slot.stale:
            return False
        stamp = file_stamp(slot.info.path)
        if stamp == slot.stamp:
            return False
        in_place = changed_in_place(slot.stamp, stamp)
        slot.stale = True
        slot.changing, slot.changing_stamp, slot.changing_since = True, stamp, time.monotonic()
        cancel = in_place and slot.mapped
        log.warning(
            "model file changed",
            model=slot.id,
            change="gone" if stamp is None else "in place" if in_place else "replaced",
            mmap=slot.mapped,
            running=slot.using,
            cancelling=len(slot.generations) if cancel else 0,
        )
        if cancel:  # their next step would read the changed (or vanished) pages
            for generation in list(slot.generations):
                generation.cancel()
        self._maybe_unload_idle(slot)
        self._notify_capacity()
        return True

    async def _unload_stale(self, slot: ModelSlot) -> None:
        if slot.stale and slot.using == 0 and slot.state == ModelState.LOADED:
            log.info("unloading model whose file changed", model=slot.id)
            await self._unload(slot)
