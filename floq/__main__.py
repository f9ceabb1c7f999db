import sys

from floq.cli import main

sys.exit(main())
