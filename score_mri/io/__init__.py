"""Input readers (``readers``: .npy, fastMRI .h5, BART .cfl by suffix; ``raw``: scanner raw data) and result
files (``outputs``)."""
