import sys

from saccader.pipeline.cli import main

sys.exit(main())
