"""Benchmarks of the ledger core (DESIGN.md "How performance is measured").

Each benchmark runs with one command, prints a table, measures a reference on the same machine
in the same run (pgbench's TPC-B-like workload on the same PostgreSQL, or SQLite's raw commit
rate), and writes every figure with the reference, the ratio and the machine to
`benchmarks/results/<name>.json`. See benchmarks/README.md.
"""
