"""How alike two models' embeddings of the same images are: linear and debiased CKA in feature
space and mutual k-NN alignment (`measures`), their bootstrap intervals (`bootstrap`), the run
over a cache's stores with rows matched by id (`compare`) and its tables and heatmaps
(`report`).

Reads stores through `medprobe.probe.targets` and resamples with `medprobe.probe.stats`;
never imports the fit or run packages.
"""
