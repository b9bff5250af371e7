import sys

from tiedsweep.cli import main

sys.exit(main())
