"""llama.cpp server's ``POST /tokenize``, ``/detokenize`` and ``/apply-template``."""

from __future__ import annotations

from ggufd.api.base import BaseHandler
from ggufd.protocol import llama_server


class LlamaTokenizeHandler(BaseHandler):
    endpoint = "tokenize"

    async def post(self) -> None:
        body = await self.parsed_body(llama_server.parse_tokenize)
        model = self.state.registry.get(body.get("model"))
        engine = self.state.engine
        tokens = await engine.tokenize(model, body["content"], body.get("add_special", False))
        pieces = await engine.token_pieces(model, tokens) if body.get("with_pieces") else None
        self.write_json(llama_server.tokenize_response(tokens, pieces))


class LlamaDetokenizeHandler(BaseHandler):
    endpoint = "tokenize"

    async def post(self) -> None:
        body = await self.parsed_body(llama_server.parse_detokenize)
        model = self.state.registry.get(body.get("model"))
        self.write_json(llama_server.detokenize_response(await self.state.engine.detokenize(model, body["tokens"])))


class ApplyTemplateHandler(BaseHandler):
    endpoint = "apply_template"

    async def post(self) -> None:
        served = self.state.served()
        self.write_json(await self.parsed_body(lambda body: llama_server.apply_template(body, served)))
