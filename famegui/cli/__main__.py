"""``python -m famegui.cli`` (the same as ``python -m famegui`` and the ``famegui`` script)."""
import sys

from . import main

sys.exit(main())
