"""Load a model on the GPU after importing modules in a given order (the kit's numpy crash).

    python benchmarks/device/import_order.py MODEL numpy llama_cpp   # numpy first
"""
import importlib
import sys

for name in sys.argv[2:]:
    importlib.import_module(name)
import llama_cpp as ll  # noqa: E402

ll.llama_backend_init()
params = ll.llama_model_default_params()
params.n_gpu_layers = -1
model = ll.llama_model_load_from_file(sys.argv[1].encode(), params)
print("loaded" if model else "load failed", "after", " then ".join(sys.argv[2:]))
