"""Analyses built on the library (linear probes; later landscapes)."""
