"""``python -m minimq.worker module:app``."""
import sys

from minimq.worker.cli import main

if __name__ == "__main__":  # spawned workers import the parent's __main__; do nothing then
    sys.exit(main())
