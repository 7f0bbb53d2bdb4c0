"""Built-in behaviour, implemented as ordinary plugins (see ``ggufd.plugins.DEFAULT_PLUGINS``)."""
