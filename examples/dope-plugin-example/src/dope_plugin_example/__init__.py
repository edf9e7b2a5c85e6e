"""An example DOPE plugin: the ``hist_gbm`` model kind and the ``up_share_20`` feature (see README.md)."""
