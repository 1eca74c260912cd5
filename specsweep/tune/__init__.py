"""`specsweep tune`: the fastest llama.cpp speculative flags for this card, this model and these
prompts, as a llama-server (and llama-cli) command line.

The stages, each recorded so that a run of the same command resumes where it stopped:
- candidates.py: every config the files allow (n-gram methods always; a draft model, the target's
  MTP head, DFlash/EAGLE-3/DSpark drafters), at several draft lengths and p_min; fit.py: the
  target's placement when --vram says it does not fit;
- pilot.py: the target's verify costs T(K) (the probe) and one short block of one config per
  family, on the user's prompts: each family's real acceptance profile and in-loop costs;
- rank.py: `predict` prices every candidate from those (and the card's calibration, if any);
- race.py: the leaders race in the blocks design against plain decoding, two blocks a round,
  the ones clearly worse than the leader dropped, until the leader's interval against the
  runner-up excludes zero (or the budget ends);
- render.py: the winner as the llama-server and llama-cli command lines a user starts;
- command.py: the click command, the progress bar, the answer.

Every measurement is an ordinary matrix run (`run.command.execute`): records, manifests, resume
and `specsweep plot` work as for any matrix. Every cell runs llama-server's slot loop in process
(`loop = "server"`), the loop whose command line is printed: on the CPU it gives llama-server's
tokens and drafted and accepted counts (tests/test_server_backend.py, tests/test_tune.py).
"""
