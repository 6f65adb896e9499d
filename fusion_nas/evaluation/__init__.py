"""Evaluators (architecture in, outcome out) and the pools that run them."""
