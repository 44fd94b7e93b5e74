"""`python -m vit_common.cli_convert ...` runs vit-convert (the console script's entry point)."""

import sys

from vit_common.cli import convert_main

if __name__ == "__main__":
    sys.exit(convert_main())
