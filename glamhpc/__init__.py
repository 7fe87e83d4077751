"""glamhpc: GLAM learners (LLM policies tuned online with PPO) on BabyAI-Text, laptop to Slurm."""

__version__ = "0.1.0"
