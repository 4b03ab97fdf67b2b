"""The benchmark suite (`make bench`): every figure is a ratio of two things measured side by side in
the same run, so a machine that is slower, or busy with other work, moves both sides alike.

`python -m bench` measures every figure, prints one table and writes it, with a description of the
machine, to `bench/RESULTS.md`. Never part of `make test` (it takes minutes); the scale simulation's
claims are checked in `make test` by `tests/test_scale.py`.
"""
