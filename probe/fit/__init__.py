"""The probes and their solvers: logistic regression (few-shot, cross-validated C; full data,
one chunked solve for every C and label), k-NN and prototypes, and the backends (batched torch,
scikit-learn, cuML) that run many small fits together.

Inputs are arrays (`protocol.ProbeInputs`), outputs class probabilities; nothing here reads a
store, scores a metric or knows about the run. Imports only numpy, torch (inside functions) and
`medprobe.cache.errors`.
"""
