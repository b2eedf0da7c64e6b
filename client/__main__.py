"""``python -m palimpsest.client``: the client subcommands (cat, edit, replay, history)."""

import sys

from .cli import main

sys.exit(main())
