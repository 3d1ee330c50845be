"""Analyses that stand apart from the engine (independent checks and derived quantities)."""
