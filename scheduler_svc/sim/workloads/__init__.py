"""Workload builders: readers for the public traces in ../shared/traces, arrival processes,
SLO assignment and the mixers that turn them into a workload JSONL (see ../workload.py)."""
