"""``python -m modulemesh`` is the ``modulemesh`` command."""

import sys

from modulemesh.cli import main

sys.exit(main())
