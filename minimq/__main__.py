import sys

from minimq.cli import main

sys.exit(main())
