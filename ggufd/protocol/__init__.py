"""The wire formats: one module per format parses a body into the engine's request types and
encodes engine events into that format's stream events and final body. No Tornado here."""
