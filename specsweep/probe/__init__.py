"""The verify-cost probe (`specsweep probe`): T(K) of one K-token target decode against one ordinary
decode step, the expert-union prediction for MoE models, break-even acceptance and the
memory-bandwidth bound. theory.py is pure arithmetic on GGUF header facts, measure.py times
llama.cpp, command.py is the CLI."""
