"""``python -m quasirl._native build|status``: build the native kernels ahead of time, or say
what is built (the same as ``quasirl build-native``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
