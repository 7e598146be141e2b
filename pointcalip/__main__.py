"""``python -m pointcalip`` (what ``torchrun`` and job schedulers launch) = the ``pointcalip`` command."""

import sys

from pointcalip.cli import main

if __name__ == "__main__":
    sys.exit(main())
