"""Imported only if a loader trusts an artifact it should not: importing it leaves a mark."""

import os

os.environ["DOPE_TEST_TRAP_IMPORTED"] = "1"


class Trap:
    """Never instantiated."""

    kind = "trap"
