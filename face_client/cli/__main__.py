"""``python -m face_client.cli``: the same as the ``face`` console script."""

import sys

from face_client.cli import main

sys.exit(main())
