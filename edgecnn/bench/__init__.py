"""edgecnn.bench: honest latency, accuracy-loss and efficiency figures per artifact x target x thread count.

``bench(models, devices, threads, data, options) -> BenchResult``; reports (Markdown, HTML, merging) in
``edgecnn.bench.report``; the result file's JSON Schema is ``schema.json`` beside this file.
"""
from edgecnn.bench.harness import BenchOptions, bench
from edgecnn.bench.result import BenchResult, BenchRow, Status

__all__ = ["BenchOptions", "BenchResult", "BenchRow", "Status", "bench"]
