"""Algorithms: advantage estimators, losses, and the registry that the trainer selects them from."""
