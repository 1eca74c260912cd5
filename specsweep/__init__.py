"""specsweep: does speculative decoding make my llama.cpp model faster on my GPU, and why?"""

from specsweep._stdcxx import make_libstdcxx_global

# before anything can load llama.cpp: see _stdcxx.py (a CUDA build crashed when numpy came first)
make_libstdcxx_global()

__version__ = "0.1.0"
