"""Statistics of probe scores: metrics, calibration (ECE, Brier, log loss), the test-set
bootstrap shared by every entry, DeLong's paired AUROC test, summaries and paired comparisons,
and the per-image predictions they read.

Works on arrays and tables only; imports numpy, scipy, pandas, h5py and `medprobe.cache`, never
the fit or run packages.
"""
