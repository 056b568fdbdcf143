import sys

from melrl.cli import main

sys.exit(main())
