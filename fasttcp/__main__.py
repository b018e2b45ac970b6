import sys

from fasttcp.cli.main import main

sys.exit(main())
