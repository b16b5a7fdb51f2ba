"""Benchmarks of probe, run by hand and never collected by pytest.

Run every benchmark and render docs/benchmarks.md with one command::

    python -m benchmarks.run_all --out docs/benchmarks.md
    python -m benchmarks.run_all --quick --results /tmp/quick --out /tmp/quick/benchmarks.md

Each ``bench_*.py`` module also runs on its own (``python -m benchmarks.bench_counting --help``)
and writes one JSON file of figures that ``python -m benchmarks.render`` turns into Markdown.
"""
