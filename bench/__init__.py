"""customerkey benchmarks: ``python -m bench`` (see bench/README.md).

Each module is one benchmark that reports its figures next to a baseline measured in the same
run on the same data; the ratios are what matter on a shared machine.
"""
