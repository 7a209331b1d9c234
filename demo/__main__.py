"""`./run demo`: until the full pipeline demo lands, the exporter's verdicts on real captures."""

import sys

from demo.verdict import main

sys.exit(main())
