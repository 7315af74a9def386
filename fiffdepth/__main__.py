"""``python -m fiffdepth`` = the ``fiffdepth`` command."""

from .cli import main

raise SystemExit(main())
