"""`python -m cli ARGS` is `stagecheck ARGS`."""

import sys

from cli.main import main

sys.exit(main())
