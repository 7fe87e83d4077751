"""glamhpc: GLAM learners (LLM policies fine-tuned online with PPO) on BabyAI-Text, laptop to Slurm."""

__version__ = "0.1.0"
