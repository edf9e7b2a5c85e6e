"""The live dashboard: a Bokeh server app fed from the bus. It shows; it never computes trading logic."""
