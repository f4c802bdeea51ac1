"""meshproxy's benchmark suite: meshproxy beside direct traffic, haproxy and nginx, measured honestly.

``python -m benchmarks [--quick]`` runs every scenario registered in ``benchmarks.__main__``;
``python -m benchmarks.<scenario>`` runs one; ``python -m benchmarks.report`` rebuilds
``results/REPORT.md`` and its plots from the latest result files. runner.py states the method.
"""
