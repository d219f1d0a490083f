"""A cache root as a whole: which stores and unfinished journals it holds (`catalog`), the same
as DataFrames and arrays for a notebook (`frames`), and `cache verify`'s byte-by-byte check
(`verify`) with the content checks it shares with the reader (`checks`).

Reads stores through `medprobe.cache.reader`; never writes one.
"""
