#!/usr/bin/env python3
"""Run the minimq broker: `python server.py` (no install step needed). See --help."""
import sys

from minimq.cli import main

if __name__ == "__main__":
    sys.exit(main())
