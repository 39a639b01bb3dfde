"""``python -m stabfw.cli``: the ``stabfw`` command."""

import sys

from stabfw.cli.main import main

sys.exit(main())
