"""BabyAI-Text environments: text descriptions, prompts, action spaces, levels and test suites.

Nothing here imports torch. Submodules are imported explicitly by their users (importing
`glamhpc.envs.levels` registers gymnasium ids, a side effect this package must not force).
"""
