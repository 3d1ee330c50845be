"""Biology: cells running on ATP (``substrate=bio``). The substrate value is
:data:`sim.substrates.bio.spec.SUBSTRATE`; ``kernels/`` holds its processes, ``state``/``params``
its PyTrees, ``build`` the config reader, ``reference`` the plain-Python stepper, ``results`` the
dataset and summary."""


def __getattr__(name):  # lazy, so that importing a submodule does not import the whole substrate
    if name == "SUBSTRATE":
        from sim.substrates.bio.spec import SUBSTRATE

        return SUBSTRATE
    raise AttributeError(name)
