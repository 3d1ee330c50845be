"""The one config reader: a value at a dotted key of a plain config, checked to be what is allowed.

Every builder (biology, LLM, generic, experiments) reads numbers through :func:`num`, so a bad
value is refused the same way everywhere: one :class:`~sim.errors.ConfigError` naming the full
dotted key, the value and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path

from sim.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the shipped Hydra config folder
_MISSING = object()


def get(cfg, dotted: str, default=_MISSING):
    """``cfg['a']['b']`` for ``dotted='a.b'``; a missing key is refused (or ``default``)."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise ConfigError(dotted, None, "a value (missing from the config)")
        node = node[part]
    return node


def num(cfg, dotted: str, minimum=None, maximum=None, strict: bool = False, integer: bool = False,
        what: str = "a number", finite: bool = True):
    """The number at ``dotted``: finite (unless ``finite=False``), an integer if asked, and in
    ``[minimum, maximum]`` (``strict``: above ``minimum``). Returns a float (or an int)."""
    v = get(cfg, dotted)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (finite and not math.isfinite(v)):
        raise ConfigError(dotted, v, f"{what} (finite)" if finite else what)
    if integer and float(v) != int(v):
        raise ConfigError(dotted, v, f"{what}: an integer")
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        raise ConfigError(dotted, v, f"{what} {'>' if strict else '>='} {minimum}")
    if maximum is not None and v > maximum:
        raise ConfigError(dotted, v, f"{what} <= {maximum}")
    return int(v) if integer else float(v)


def compose(overrides=(), config_dir=None) -> dict:
    """Compose ``conf/config.yaml`` with Hydra overrides, as ``python -m sim`` would, into a plain dict."""
    from hydra import compose as h_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir or CONF_DIR)):
        cfg = h_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)
