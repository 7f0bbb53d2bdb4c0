"""``POST /v1/embeddings`` for embedding models (``embedding = true``, or a GGUF with pooling)."""

from __future__ import annotations

from ggufd.api.base import BaseHandler
from ggufd.errors import WrongModelType
from ggufd.protocol.openai_embeddings import embeddings_response, parse_embeddings_request


class EmbeddingsHandler(BaseHandler):
    endpoint = "embeddings"

    async def post(self) -> None:
        limits = self.state.limits()
        request = await self.parsed_body(lambda body: parse_embeddings_request(body, limits))
        model = self.state.registry.get(request.model)
        self.log_fields["model"] = model.id
        if not self.state.engine.is_embedding_model(model):
            raise WrongModelType(model.id, wanted="embedding")
        vectors, used = await self.state.engine.embed(model, request.inputs)
        self.log_fields["prompt_tokens"] = used
        self.write_json(embeddings_response(model.id, vectors, used, request.encoding_format))
