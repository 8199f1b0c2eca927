"""``python -m aihf.cli ...`` (what ``torchrun -m aihf.cli`` and ``accelerate launch -m aihf.cli`` run)."""

from . import main

raise SystemExit(main())
