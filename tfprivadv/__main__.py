import sys

from tfprivadv.cli import main

sys.exit(main())
