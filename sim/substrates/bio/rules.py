"""What each number of the biology preset (``conf/substrate/bio.yaml``) may be: the substrate's
``config_rules``, applied by :func:`sim.config.validate.validate` to every number (every problem at
once, before anything is built).

The builder (:mod:`sim.substrates.bio.build`) reads the same keys with its own checks (it is also
called without the validation); where it knows more than a range (the producers fit their slots,
dG0 strictly below 0, a junction loss below 1, a ceiling that is a number or ``pmf``), it has the
last word.
"""

from __future__ import annotations

from sim.core.substrate import Rule

# no cell pool or medium reaches 1 M: larger concentrations are typing errors and would overflow the
# energy ledgers (J = mM x L x kJ/mol) long before they meant anything
MAX_MM = 1000.0

# the words of the refusals the validation gave before the rules were declared, kept for the kinds they name
NONNEG = Rule(minimum=0, allowed="a number >= 0 (rates, capacities, affinities and amounts cannot be negative)")
FRACTION = Rule(minimum=0, maximum=1, allowed="a fraction in [0, 1]")
POSITIVE = Rule(minimum=0, strict=True)  # "a number > 0", as the builder says it
CONCENTRATION = Rule(minimum=0, maximum=MAX_MM, allowed=f"a concentration >= 0 and <= {MAX_MM:g} mM")
COUNT = Rule(minimum=0, integer=True, allowed="an integer >= 0")
SLOTS = Rule(minimum=1, integer=True, allowed="an integer >= 1")
# a substrate's oxidation releases the energy a producer stores in ATP: its free energy is negative
RELEASED = Rule(maximum=0, allowed="a number <= 0 (kJ/mol released: free energies of the reactions that drive ATP "
                                   "synthesis are negative)")

RULES = (
    ("temperature_k", POSITIVE),
    ("volume_l", POSITIVE),
    ("landauer_bits_per_unit", Rule(minimum=0, strict=True, optional=True)),
    ("initial.glucose_mm", CONCENTRATION),
    ("initial.adenine_total_mm", Rule(minimum=0, strict=True, maximum=MAX_MM,
                                      allowed=f"a concentration > 0 and <= {MAX_MM:g} mM (a cell needs adenine)")),
    ("initial.energy_charge", FRACTION),
    ("initial.pi_mm", CONCENTRATION),
    ("thermo.dg0_kj_per_mol", Rule(maximum=0, allowed="a negative standard free energy (kJ/mol): ATP hydrolysis "
                                                      "releases energy")),
    ("thermo.k_ak", POSITIVE),
    ("bound.adp_mm", CONCENTRATION),
    ("bound.amp_mm", CONCENTRATION),
    ("buffer.creatine_total_mm", CONCENTRATION),
    ("buffer.ck_keq_per_molar", POSITIVE),
    ("buffer.ph", Rule(minimum=0, strict=True, maximum=14, allowed="a pH > 0 and <= 14")),
    ("supply.external_glucose_mm", CONCENTRATION),
    ("supply.uptake_per_s", NONNEG),
    ("supply.uptake_cv", NONNEG),
    ("supply.parallel_activation", Rule(minimum=0, maximum=2, allowed="a number >= 0 and <= 2 (the exponent of "
                                                                      "demand_scale in the supply capacity)")),
    ("producers.capacity_per_cell", SLOTS),
    ("producers.kinds.*.count", COUNT),
    ("producers.kinds.*.vmax_mm_per_s", NONNEG),
    ("producers.kinds.*.yield", POSITIVE),
    ("producers.kinds.*.substrate_dg_kj_per_mol", RELEASED),
    ("producers.kinds.*.ceiling_kj_per_mol", Rule(minimum=0, strict=True, allowed="a positive number (kJ/mol) or 'pmf'")),
    ("producers.kinds.*.n_h", POSITIVE),
    ("producers.kinds.*.delta_p_v", Rule(minimum=0, strict=True, allowed="a positive proton-motive force in V")),
    ("producers.kinds.*.k_glucose_mm", POSITIVE),
    ("producers.kinds.*.k_adp_mm", POSITIVE),
    ("producers.kinds.*.k_pi_mm", POSITIVE),
    ("producers.kinds.*.damage_per_s", NONNEG),
    ("producers.hazard_per_s", NONNEG),
    ("producers.hazard_health_exponent", NONNEG),
    ("producers.repair_per_s", NONNEG),
    ("producers.repair_cost_mm", NONNEG),
    ("producers.birth_per_s", NONNEG),
    ("producers.birth_set_energy_charge", FRACTION),
    ("producers.birth_span_energy_charge", Rule(minimum=0, strict=True, maximum=1, allowed="a fraction in (0, 1]")),
    ("producers.birth_sensor_tau_s", POSITIVE),
    ("producers.birth_cost_mm", NONNEG),
    ("consumers.demand_total_mm_per_s", NONNEG),
    ("consumers.demand_cv", NONNEG),
    ("consumers.tier_reserve_mm", Rule(minimum=0, allowed="a list of 3 numbers >= 0 (mM, tiers 0, 1, 2)")),
    ("consumers.kinds.*.share", NONNEG),
    ("consumers.kinds.*.tier", Rule(minimum=0, maximum=2, integer=True, allowed="an integer tier 0, 1 or 2")),
    ("consumers.kinds.*.km_mm", POSITIVE),
    ("consumers.kinds.*.value", NONNEG),
    ("chains.slots_per_cell", SLOTS),
    ("chains.atp_per_aa", POSITIVE),
    ("chains.elongation_aa_per_s", POSITIVE),
    ("chains.mean_length_aa", Rule(minimum=1)),
    ("chains.max_length_aa", POSITIVE),
    ("chains.initiation_per_s", NONNEG),
    ("chains.initiation_atp", NONNEG),
    ("cell.stress_threshold", FRACTION),
    ("cell.stress_death_s", POSITIVE),
    ("cell.stress_recovery_per_s", NONNEG),
    ("transport.conductance_per_s", NONNEG),
    ("transport.loss_fraction", FRACTION),  # the builder refuses 1 too (everything sent would be lost)
    ("transport.permeability.*", NONNEG),
)
