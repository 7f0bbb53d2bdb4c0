"""The HTTP layer: the Tornado application, its handlers, security, metrics. Tornado lives only here."""
