"""Config schemas (Hydra ConfigStore) and value checks run before anything is compiled."""

from sim.config.validate import validate

__all__ = ["validate"]
