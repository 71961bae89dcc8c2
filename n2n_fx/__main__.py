"""`python -m n2n_fx ...` is the `n2n-fx` command."""

import sys

from .cli import main

sys.exit(main())
