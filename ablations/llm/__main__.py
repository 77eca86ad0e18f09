"""``python -m ablations.llm`` (also under torchrun): :func:`ablations.llm.cli.main`."""

import sys

from .cli import main

sys.exit(main())
