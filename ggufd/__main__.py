"""``python -m ggufd`` is the ``ggufd`` command."""

from ggufd.cli import main

raise SystemExit(main())
