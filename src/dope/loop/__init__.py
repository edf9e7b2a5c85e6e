"""The DataOps loop's building blocks: the promotion gate and the audit log of model decisions."""
