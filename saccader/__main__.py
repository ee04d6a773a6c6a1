import sys

from saccader.cli import main

sys.exit(main())
