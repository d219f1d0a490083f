"""How a store's bytes are laid out on disk: the schema plain h5py reads a store with
(`schema`), how datasets are packed and checksummed in HDF5 (`container`), and the token-grid
entry of stores written with `--tokens` (`tokens`).

Knows HDF5 and numpy only; the reader and the writer build on it.
"""
