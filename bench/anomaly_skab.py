"""SKAB anomaly benchmark through a machine twin (see twinfleet.benchmarks.skab).

python bench/anomaly_skab.py ../shared/data/skab/valve1 [more files or folders...]
"""

from __future__ import annotations

import sys

from twinfleet.benchmarks.skab import main

if __name__ == "__main__":
    sys.exit(main())
