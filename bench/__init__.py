"""The benchmark harness: each figure measured next to its baseline, in one run (`make bench`)."""
