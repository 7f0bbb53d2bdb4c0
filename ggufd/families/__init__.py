"""The model families ggufd ships: gemma, llama3, chatml, mistral, phi, deepseek, gpt_oss, glm
and kimi_k2.

Each module is a plugin written exactly like a third-party one: it imports nothing from
ggufd but the public API (``ggufd.hookimpl``, ``ggufd.ChatPrompt``, ``ggufd.tool_call``, ...),
and every hook returns ``None`` for models of other families. They are registered as
built-in plugins under their module names (see :data:`ggufd.plugins.FAMILY_PLUGINS` for the
order and the precedence), so ``disable_plugins = ["gemma"]`` switches one off, and a file
of the same name in ``plugins_dir`` replaces one.

Nothing is imported here: the plugin manager imports each family module by name.
"""
