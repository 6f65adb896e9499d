"""Helpers shared by the test modules: search spaces, planted tables, store records, benchmark
loading and per-operator configs. Test modules import these, never each other."""
