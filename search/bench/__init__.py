"""`python -m search.bench`: the speed benchmark (`__main__`), its measurements (`parts`, each run in a fresh
process), and its CPU accounting (`procs`: per process and thread; `accounting`: per trial)."""
