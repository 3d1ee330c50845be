"""The LLM preset's engine: model instances (cells) on GPUs (producers) serving requests.

Tokens are the currency, the KV cache is the conserved carrier (occupied + free = capacity),
decode streams are the chains of the cascade (each token costs more as the context grows), tools
and memory modules are consumers, and requests can be routed between models along the tissue's
edges. Modules:

- ``specs``: model / GPU specifications, the decode roofline, prefill FLOPs, KV capacity;
- ``state``, ``params``: PyTrees of fixed-capacity arrays with masks;
- ``kernels``: the pure step processes ``(state, params, key) -> state``;
- ``engine``: ``jit(vmap(scan))`` over steps and replicates (or parameter points);
- ``reference``: the plain-Python stepper the engine is checked against (float64);
- ``build``: config -> state and parameters, with the refusals; ``results``: dataset and summary.

Experiments using it: ``roofline`` (serving calculator), ``serving``, ``cascade``
(``sim/experiments``). Units: tokens, s, J, FLOP, bytes, USD.
"""
