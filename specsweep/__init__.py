"""specsweep: does speculative decoding make my llama.cpp model faster on my GPU, and why?"""

__version__ = "0.1.0"
