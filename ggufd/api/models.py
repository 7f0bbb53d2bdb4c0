"""``GET /v1/models`` and ``/v1/models/{id}``; ``POST /admin/models/{id}/load|unload``."""

from __future__ import annotations

from ggufd.api.base import BaseHandler
from ggufd.errors import ModelBusy
from ggufd.protocol.openai_models import model_list, model_object
from ggufd.types import ModelInfo


class ModelsHandler(BaseHandler):
    endpoint = "models"

    def get(self, model_id: str | None = None) -> None:
        loaded = set(self.state.engine.loaded_models())

        def describe(info: ModelInfo) -> dict:
            return model_object(
                info, self.state.config.models_dir, info.id in loaded, self.state.engine.settings_for(info)
            )

        if model_id is not None:
            self.write_json(describe(self.state.registry.get(model_id)))
        else:
            self.write_json(model_list([describe(info) for info in self.state.registry]))


class AdminModelHandler(BaseHandler):
    """``POST /admin/models/{id}/load`` and ``.../unload``: explicit lifecycle control."""

    endpoint = "admin"

    async def post(self, model_id: str, action: str) -> None:
        info = self.state.registry.get(model_id)
        engine = self.state.engine
        if action == "load":
            await engine.load(info)
        elif not await engine.unload(info.id):
            raise ModelBusy(info.id)
        self.write_json({"id": info.id, "state": engine.status().get(info.id, {}).get("state", "unloaded")})
