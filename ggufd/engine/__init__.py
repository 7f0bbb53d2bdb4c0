"""The engine layer: model lifecycle, devices, continuous batching, sampling, llama.cpp.

Nothing here imports Tornado or a wire format (``ggufd.api``, ``ggufd.protocol``); the upper
layers use an engine through :class:`ggufd.engine.contract.EngineClient`. Import the modules
themselves (``ggufd.engine.lifecycle``): this package does not load llama.cpp on import.
"""
