"""An example third-party ggufd plugin, installable with pip.

It adds the model family "example": any model whose file name contains "example-family"
is formatted as a plain "### Instruction / ### Response" prompt (the Alpaca style), with
"### Instruction:" as an extra stop string. Copy this package to start your own family.
"""

import ggufd

__version__ = "1.0.0"

FAMILY = "example"


@ggufd.hookimpl
def detect_family(metadata, spec):
    return FAMILY if "example-family" in spec.path.name else None


@ggufd.hookimpl
def format_chat(model, messages):
    if model.family != FAMILY:
        return None
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    parts = [system + "\n\n"] if system else []
    for message in messages:
        if message["role"] == "user":
            parts.append(f"### Instruction:\n{message['content']}\n\n")
        elif message["role"] == "assistant":
            parts.append(f"### Response:\n{message['content']}\n\n")
    parts.append("### Response:\n")
    return ggufd.ChatPrompt(text="".join(parts), stop=("### Instruction:",))


@ggufd.hookimpl
def stop_sequences(model):
    return ["### Instruction:"] if model.family == FAMILY else None
