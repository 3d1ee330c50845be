"""Frozen dataclasses registered as JAX PyTrees (the jax-md / gymnax style of state and params)."""

from __future__ import annotations

import dataclasses

import jax


def pytree_dataclass(cls):
    """Make ``cls`` a frozen dataclass whose fields are all PyTree leaves/children."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
