"""LLM serving: model instances (cells) on GPUs (producers) serving requests (``substrate=llm``).

Tokens are the currency, the KV cache is the conserved carrier (occupied + free = capacity),
decode streams are the chains of the cascade (each token costs more as the context grows), tools
and memory modules are consumers, and requests can be routed between models along the tissue's
edges. The substrate value is :data:`sim.substrates.llm.spec.SUBSTRATE`; modules: ``specs`` (model /
GPU specifications, the decode roofline, prefill FLOPs, KV capacity), ``state``/``params``
(PyTrees of fixed-capacity arrays with masks), ``kernels`` (the step processes), ``reference``
(the plain-Python stepper the engine is checked against), ``build`` (config -> state and
parameters, with the refusals), ``results`` (dataset and serving summary). Units: tokens, s, J,
FLOP, bytes, USD.
"""


def __getattr__(name):  # lazy, so that importing a submodule does not import the whole substrate
    if name == "SUBSTRATE":
        from sim.substrates.llm.spec import SUBSTRATE

        return SUBSTRATE
    raise AttributeError(name)
