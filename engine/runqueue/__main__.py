"""`python -m engine.runqueue ...`: the headless queue commands (what `loratui queue` runs)."""

import sys

from engine.runqueue.cli import main

sys.exit(main())
