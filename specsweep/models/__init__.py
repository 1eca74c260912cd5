"""Models by name: models.lock, the Hugging Face cache, and the checks made before anything loads.

- `lockfile`: parse, validate and write models.lock
- `hub`: fetch into the standard Hugging Face cache, verify sha256 and size, Hub errors as one line
- `resolve.resolve_locked(name)`: a lock name -> the verified GGUF llama.cpp loads (fetching it)
- `vocab_match.check_pair(...)`: llama.cpp's draft/target vocabulary rules, from GGUF headers
- `memory.estimate_cell_bytes(...)`, `memory.free_device_bytes()`: will a cell fit
- `commands`: `specsweep fetch`, `specsweep lock [--update]`, `specsweep models`

The submodules are imported where they are used: huggingface_hub and gguf are not needed to start
the CLI.
"""
