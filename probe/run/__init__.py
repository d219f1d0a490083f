"""A probe run end to end: its settings (`settings`), the sweep of every (store, pooling) over
budgets, seeds and methods (`sweep`), the joblib/Dask backend it fans out on (`cluster`), the
library call `mp.probe` (`runner`) and the `Results` it returns and saves (`results`).

Uses `fit`, `stats`, `report`, `budgets` and `targets`; nothing imports the run back.
"""
