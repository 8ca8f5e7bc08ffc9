"""Fault tests: power cuts, full disks, corruption, bad input and fuzzing (issue 5)."""
