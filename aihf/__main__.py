"""``python -m aihf ...`` works like ``aihf ...``."""

from .cli import main

raise SystemExit(main())
