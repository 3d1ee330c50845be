"""Pure process functions of the biology substrate: each ``(state, params, key) -> state``
(their order: ``sim.substrates.bio.kernels.step.PROCESSES``)."""
