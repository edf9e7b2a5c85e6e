"""Array types and time constants shared across the package (numpy's typing only: cheap to import)."""

from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
