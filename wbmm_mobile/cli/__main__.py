import sys

from wbmm_mobile.cli import main

sys.exit(main())
