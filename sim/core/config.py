"""The one config reader: a value at a dotted key of a plain config, checked to be what is allowed.

Every builder (biology, LLM, generic, experiments) reads numbers through :func:`num`, so a bad
value is refused the same way everywhere: one :class:`~sim.errors.ConfigError` naming the full
dotted key, the value and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path

from sim.errors import ConfigError

# The Hydra config folder ships inside the package (package data), so the same path works from a
# checkout (editable install) and from an installed wheel; Hydra is given it as an absolute path.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
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


def read_section(cfg: dict, section: str, defaults: dict) -> tuple[dict, list[ConfigError]]:
    """(``defaults`` updated by the mapping ``cfg[section]``, the unknown keys as problems) for a
    config group read by a core module (``differentiation``, ``carriers``); ``name`` is the group
    option's own label and is skipped. A section that is not a mapping is refused at once."""
    node = cfg.get(section)
    node = {} if node is None else node
    if not isinstance(node, dict):
        raise ConfigError(section, node, f"a mapping (conf/{section}/*.yaml)")
    out, problems = dict(defaults), []
    for key, value in node.items():
        if key == "name":
            continue
        if key not in defaults:
            problems.append(ConfigError(f"{section}.{key}", value, f"a key of {section}: " + ", ".join(defaults)))
            continue
        out[key] = value
    return out, problems


def bounded(value, lo, strict: bool, hi=None) -> str | None:
    """None when ``value`` is a finite number ``> lo`` (``strict``) or ``>= lo``, and ``<= hi``; else
    what is allowed."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > lo if strict else value >= lo) and (hi is None or value <= hi):
        return None
    return f"a finite number {'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")


def load_config(overrides=()) -> dict:
    """The shipped configs (``sim/conf``, inside the package) composed with Hydra ``overrides``
    (``["experiment=tissue", "topology=ring", "topology.n_cells=10"]``) into a plain dict, as
    ``python -m sim`` composes them; ``sim.load_config``. No path is needed, from a checkout or
    an installed wheel. A bad override (unknown group option or key, wrong type, unparsable) is one
    :class:`~sim.errors.ConfigError` naming its key and value, as on the command line."""
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError("overrides", overrides, "a list of Hydra override strings, e.g. ['topology=ring', 'steps=100']")
    overrides = list(overrides)
    from hydra import compose as h_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from sim.app import _hydra_error, preflight  # the command line's one-line refusals
    from sim.config.validate import check_group_keys

    preflight(overrides)  # an unknown group option: named with the options there are
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = h_compose(config_name="config", overrides=overrides)
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:
        raise _hydra_error(exc, overrides) from None
    # keys added with `+` that no shipped file of their group has: refused as `python -m sim` refuses them
    check_group_keys(OmegaConf.to_container(cfg, resolve=False))
    return plain


def compose(overrides=(), config_dir=None) -> dict:
    """Compose ``conf/config.yaml`` with Hydra overrides, as ``python -m sim`` would, into a plain dict."""
    from hydra import compose as h_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir or CONF_DIR)):
        cfg = h_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)
