"""Physical constants (SI, CODATA 2018 exact values where defined)."""

R_J_PER_MOL_K = 8.314462618  # gas constant, J/(mol K)
FARADAY_C_PER_MOL = 96485.33212  # Faraday constant, C/mol
AVOGADRO_PER_MOL = 6.02214076e23  # Avogadro constant, 1/mol
BOLTZMANN_J_PER_K = 1.380649e-23  # Boltzmann constant, J/K
LN2 = 0.6931471805599453


def landauer_j(temperature_k: float) -> float:
    """Landauer bound kT ln 2 in joules per bit (Landauer 1961; Berut et al. 2012 Nature)."""
    return BOLTZMANN_J_PER_K * temperature_k * LN2
