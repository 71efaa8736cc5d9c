"""`python -m dmft_jax` runs the `dmft-jax` command line."""

import sys

from ._cli import main

sys.exit(main())
