"""Helpers shared by the test modules (not a test file: pytest puts tests/ on sys.path)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def bio_substrate() -> dict:
    """The shipped biology preset as a plain dict (a fresh copy each call)."""
    return yaml.safe_load((ROOT / "conf" / "substrate" / "bio.yaml").read_text())


def quiet_bio_substrate(**chains) -> dict:
    """The biology preset without producer wear, failure or biogenesis (a deterministic supply),
    with optional overrides of its ``chains`` section."""
    sub = bio_substrate()
    prod = sub["producers"]
    prod["hazard_per_s"] = 0.0
    prod["birth_per_s"] = 0.0
    for kind in prod["kinds"].values():
        kind["damage_per_s"] = 0.0
    sub["chains"].update(chains)
    return sub
