"""C-MAPSS RUL benchmark through the twins (see twinfleet.benchmarks.cmapss).

python bench/rul_cmapss.py train_FD001.txt test_FD001.txt RUL_FD001.txt [--cap 125]
"""

from __future__ import annotations

import sys

from twinfleet.benchmarks.cmapss import main

if __name__ == "__main__":
    sys.exit(main())
