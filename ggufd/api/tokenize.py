"""``POST /extras/tokenize`` (``{"input": str}`` or ``{"messages": [...]}`` as a chat request
would format them), ``/extras/tokenize/count`` and ``/extras/detokenize``."""

from __future__ import annotations

from ggufd.api.base import BaseHandler
from ggufd.protocol import extras


class TokenizeHandler(BaseHandler):
    endpoint = "tokenize"

    async def post(self, action: str) -> None:
        limits = self.state.limits()
        body = await self.parsed_body(lambda body: extras.parse_tokenize_request(body, limits))
        model = self.state.registry.get(body.get("model"))
        engine = self.state.engine
        if action == "detokenize":
            self.write_json({"text": await engine.detokenize(model, extras.detokenize_tokens(body))})
            return
        text, add_bos = extras.text_to_tokenize(body, self.state.plugins, model, limits)
        tokens = await engine.tokenize(model, text, add_bos)
        self.write_json(extras.tokens_response(tokens, count_only=action == "tokenize/count"))
