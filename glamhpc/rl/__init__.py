"""Reinforcement learning: rollout storage + GAE (pure), the PPO update, and the training loop."""
