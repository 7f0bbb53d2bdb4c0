"""What every handler shares: the config, the models, the plugins, the engine, and the daemon's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ggufd.config import Config
from ggufd.engine.contract import EngineClient
from ggufd.plugins import Plugins
from ggufd.protocol.generation import Served
from ggufd.protocol.options import ServerLimits
from ggufd.registry import ModelRegistry
from ggufd.systemd import Notifier

if TYPE_CHECKING:
    from ggufd.api.metrics import Metrics


@dataclass
class AppState:
    config: Config
    registry: ModelRegistry
    plugins: Plugins
    engine: EngineClient
    draining: bool = False
    #: rebuilds the config (same file, same command-line overrides) for SIGHUP
    reload_config: Callable[[], Config] | None = None
    active: set = field(default_factory=set)  # generation handlers in flight
    metrics: Metrics | None = None
    notifier: Notifier = field(default_factory=lambda: Notifier({}))

    def served(self) -> Served:
        """The view a wire format's parser gets (rebuilt per request: a reload may replace the registry)."""
        config = self.config
        defaults = {
            "chat_template_kwargs": config.chat_template_kwargs,
            "reasoning_effort": config.reasoning_effort,
            "max_reasoning_tokens": config.max_reasoning_tokens,
        }
        return Served(self.registry, self.plugins, self.limits(), config.log_content, defaults)

    def limits(self) -> ServerLimits:
        """The operator's per-request limits from the config in force."""
        config = self.config
        return ServerLimits(
            max_tokens_cap=config.max_tokens_cap,
            max_messages=config.max_messages,
            max_embedding_inputs=config.max_embedding_inputs,
            max_logit_bias=config.max_logit_bias,
            max_tools=config.max_tools,
            max_content_parts=config.max_content_parts,
        )
