"""Thin processes around the shared core: collector, featurizer, models, decoy, rendezvous, trader, dashboard.

Importing this package (every service process does, before pyarrow) makes Arrow allocate with the C
library's malloc unless ``ARROW_DEFAULT_MEMORY_POOL`` says otherwise: Arrow's default pool (mimalloc) keeps
the pages of freed buffers, so a service that re-reads a growing Parquet day file grew with it (the decoy's
feature archive: about 100 MB over a day of 10 s bars; see docs/reliability.md). Arrow reads the variable
once, when it creates its default pool: setting it after pyarrow is imported has no effect.
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
