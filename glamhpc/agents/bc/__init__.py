"""Behaviour cloning (the paper's Q4 baseline): demonstrations in, a GLAM-scored policy out.

`dataset` writes and validates trajectory datasets (`glamhpc demos`), `recorder` records an
agent playing through evaluation's player, `schedule` and `cloner` are the pure pieces of the
objective, and `trainer` is the `agent: bc` loop (`glamhpc.agents.train_agent` dispatches to it).
"""
