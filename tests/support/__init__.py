"""Test support: waiting on conditions, child processes, throwaway databases, sample tasks.

Only test code imports this package; the product never does. `sample_tasks.py` is loaded by
real worker processes with `--tasks <path>`, so it must import nothing from here.
"""
