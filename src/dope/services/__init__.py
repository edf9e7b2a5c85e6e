"""Thin processes around the shared core: the collector now; featurizer, models, rendezvous, trader later."""
