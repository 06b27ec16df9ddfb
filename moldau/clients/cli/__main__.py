"""``python -m moldau.clients.cli`` runs the ``moldau`` command."""

import sys

from moldau.clients.cli.main import main

sys.exit(main())
