"""DOPE - DataOps Prediction Engine: live ML predictions on market data, and an honest research bench."""

__version__ = "0.1.0"
