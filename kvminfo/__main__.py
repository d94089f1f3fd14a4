import sys

from kvminfo.cli import main

sys.exit(main())
