"""``python -m featclf`` runs the ``featclf`` command."""

import sys

from featclf.cli import main

sys.exit(main())
