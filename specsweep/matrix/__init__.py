"""Matrix files: `matrices/*.toml` -> validated settings -> the list of cells a run measures."""
