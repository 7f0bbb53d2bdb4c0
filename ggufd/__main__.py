"""``python -m ggufd`` is the ``ggufd`` command."""

from .cli import main

raise SystemExit(main())
