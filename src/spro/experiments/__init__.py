"""Experiments: evaluation, multi-seed grids of runs, statistics, and reports with plots."""
