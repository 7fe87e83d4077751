"""The DRRN baseline (He et al. 2016, as upstream GLAM's ``experiments/agents/drrn``): GRU
encoders of the text observation and of each action, Q(s, a) from their concatenation,
Q-learning from a replay memory, actions sampled from softmax(Q). `trainer` runs it with the
one-rank run machinery of `glamhpc.agents.loop`; `export` is what `glamhpc eval` loads."""
