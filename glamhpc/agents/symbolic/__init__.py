"""Symbolic-PPO, the GLAM paper's non-language baseline: BabyAI's FiLM-CNN actor-critic with LSTM
memory on the 7x7x3 symbolic view and the mission, trained by recurrent PPO (`agent: symbolic`).

`model` (the network), `vocab` (the instruction vocabulary), `rollout` (acting with memory),
`ppo` (the update through time), `trainer` (the run, on `agents.loop`), `play` (export and
evaluation player). docs/BASELINES.md says what differs upstream.
"""
