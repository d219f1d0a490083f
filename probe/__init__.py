"""Probing cached embeddings: which frozen model represents a task best, with how many labels.

Four parts, imported one way (run → fit, stats, report; similarity → stats; none of them
imports the run):

- `fit/`: the probes and their solvers (logistic regression few-shot and at full data, k-NN,
  prototypes, the backends that batch them);
- `stats/`: metrics, calibration, the test bootstrap, DeLong and the paired comparisons;
- `similarity/`: how alike two models' embeddings of the same images are (CKA, mutual k-NN);
- `run/`: a probe run end to end (its settings, the sweep over stores, budgets and seeds, the
  cluster backend, the `Results` it returns); `report/` turns those results into tables,
  figures and report.md.

Beside them: `budgets.py` (label budgets and the support draws every model shares),
`targets.py` (which stores to probe and their arrays by split) and `cli.py` (`probe run |
report | similarity`). Nothing here imports torch at import time.
"""
