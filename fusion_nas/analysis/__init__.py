"""Looking at results: figures, explain probes, baselines and final retraining."""
