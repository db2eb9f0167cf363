"""Energy and CO2 of a training run, the way Luccioni et al. 2022 accounted for BLOOM.

In: either an energy (MWh) or GPU-hours x a GPU's power x utilisation, a PUE and a grid carbon
intensity (gCO2eq/kWh, given or looked up by ISO 3166 alpha-3 country code). Out: a json-able
dict with energy and tonnes of CO2eq, each without and with the PUE (`carbon_report`), and a
text rendering with the two side by side.

Luccioni, Viguier, Ligozat 2022 ("Estimating the Carbon Footprint of BLOOM, a 176B Parameter
Language Model"): 1,082,990 A100 GPU-hours, 433 MWh of dynamic consumption (which is
GPU-hours x 400 W), 57 gCO2eq/kWh for the French grid, 24.69 tCO2eq of dynamic emissions. Their
table 4 compares models in two columns, "CO2eq emissions" and "CO2eq emissions x PUE"
(BLOOM 25 t and 30 t at PUE 1.2); `carbon_report` gives both.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from bloomforge.errors import BloomforgeError


@dataclass(frozen=True)
class Grid:
    gco2_per_kwh: float
    source: str


# codecarbon (mlco2/codecarbon, codecarbon/data/private_infra/global_energy_mix.json): 2021
# yearly electricity mix per country from Our World in Data, times codecarbon's emission factor
# per source. Annual averages: the marginal or hourly intensity of a given data centre can differ
# a lot; pass --grid-gco2-per-kwh when you know your provider's figure.
_CODECARBON = "codecarbon global_energy_mix.json (OWID 2021 mix)"
GRID_INTENSITY: dict[str, Grid] = {
    # The BLOOM carbon paper's figure for the Jean Zay cluster's grid (RTE); codecarbon has 67.4.
    "FRA": Grid(57.0, "Luccioni et al. 2022 (French grid, BLOOM)"),
    "USA": Grid(379.3, _CODECARBON),
    "DEU": Grid(365.5, _CODECARBON),
    "GBR": Grid(268.3, _CODECARBON),
    "CHN": Grid(544.4, _CODECARBON),
    "IND": Grid(637.2, _CODECARBON),
    "ESP": Grid(193.9, _CODECARBON),
    "FIN": Grid(145.5, _CODECARBON),
    "SWE": Grid(45.8, _CODECARBON),
    "AUS": Grid(531.2, _CODECARBON),
    "BRA": Grid(158.6, _CODECARBON),
    "TWN": Grid(573.3, _CODECARBON),
}


def grid_intensity(country: str) -> Grid:
    key = country.upper()
    if key not in GRID_INTENSITY:
        near = difflib.get_close_matches(key, GRID_INTENSITY, n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise BloomforgeError(
            f"no grid intensity for country '{country}' ({hint}known: "
            f"{', '.join(GRID_INTENSITY)}); pass --grid-gco2-per-kwh instead"
        )
    return GRID_INTENSITY[key]


def energy_from_gpu_hours(
    gpu_hours: float,
    gpu_power_w: float,
    utilisation: float = 1.0,
    pue: float = 1.0,
    node_overhead_w: float = 0.0,
) -> dict[str, Any]:
    """IT energy = GPU-hours x (power x utilisation + per-GPU node overhead); facility = IT x PUE.

    Luccioni et al. 2022 count BLOOM's dynamic GPU energy as GPU-hours x TDP (400 W); the PUE
    (Uptime Institute's power usage effectiveness) adds cooling and power distribution.
    """
    for name, value in (("utilisation", utilisation), ("pue", pue)):
        if value <= 0:
            raise BloomforgeError(f"--{name} must be positive, got {value}")
    it_kwh = gpu_hours * (gpu_power_w * utilisation + node_overhead_w) / 1000.0
    return {
        "gpu_hours": gpu_hours,
        "gpu_power_w": gpu_power_w,
        "utilisation": utilisation,
        "node_overhead_w": node_overhead_w,
        "pue": pue,
        "it_energy_mwh": it_kwh / 1000.0,
        "energy_mwh": it_kwh * pue / 1000.0,
    }


def energy_from_mwh(it_energy_mwh: float, pue: float = 1.0) -> dict[str, Any]:
    """A measured or published IT energy; the PUE scales it to the facility's draw."""
    if it_energy_mwh < 0 or pue <= 0:
        raise BloomforgeError(f"energy must be >= 0 and PUE > 0, got {it_energy_mwh}, {pue}")
    return {
        "gpu_hours": None,
        "pue": pue,
        "it_energy_mwh": it_energy_mwh,
        "energy_mwh": it_energy_mwh * pue,
    }


def co2_tonnes(energy_mwh: float, gco2_per_kwh: float) -> float:
    """MWh x gCO2/kWh = kg CO2 (1000 kWh x g / 1000 = kg); / 1000 for tonnes."""
    return energy_mwh * gco2_per_kwh / 1000.0


def carbon_report(energy: dict[str, Any], gco2_per_kwh: float, grid_source: str) -> dict[str, Any]:
    """Energy and CO2 without the PUE (the IT equipment's draw) and with it (the facility's).

    The `*_without_pue` / `*_with_pue` keys are the two columns of Luccioni et al. 2022, table 4;
    `energy_mwh` and `co2_tonnes` (the facility figures) stay for the callers that read them.
    """
    it_mwh, facility_mwh = energy["it_energy_mwh"], energy["energy_mwh"]
    co2 = co2_tonnes(facility_mwh, gco2_per_kwh)
    return {
        **energy,
        "grid_gco2_per_kwh": gco2_per_kwh,
        "grid_source": grid_source,
        "energy_mwh_without_pue": it_mwh,
        "energy_mwh_with_pue": facility_mwh,
        "co2_tonnes_without_pue": co2_tonnes(it_mwh, gco2_per_kwh),
        "co2_tonnes_with_pue": co2,
        "co2_tonnes": co2,
    }


def format_carbon(r: dict[str, Any]) -> str:
    rows = []
    if r.get("gpu_hours") is not None:
        rows += [
            ("GPU-hours", f"{r['gpu_hours']:,.0f}"),
            ("GPU power x utilisation", f"{r['gpu_power_w']:g} W x {r['utilisation']:g}"),
        ]
        if r.get("node_overhead_w"):
            rows.append(("node overhead per GPU", f"{r['node_overhead_w']:g} W"))
    rows += [
        ("PUE", f"{r['pue']:g}"),
        ("grid intensity", f"{r['grid_gco2_per_kwh']:g} gCO2eq/kWh ({r['grid_source']})"),
    ]
    # The two columns of Luccioni et al. 2022, table 4: IT equipment alone, then x PUE.
    table = [
        ("", "without PUE", f"with PUE (x {r['pue']:g})"),
        (
            "energy",
            f"{r['energy_mwh_without_pue']:,.1f} MWh",
            f"{r['energy_mwh_with_pue']:,.1f} MWh",
        ),
        (
            "emissions",
            f"{r['co2_tonnes_without_pue']:,.2f} tCO2eq",
            f"{r['co2_tonnes_with_pue']:,.2f} tCO2eq",
        ),
    ]
    width = max(len(k) for k, *_ in rows + table)
    w1, w2 = (max(len(t[i]) for t in table) for i in (1, 2))
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"{k:<{width}}  {a:>{w1}}  {b:>{w2}}" for k, a, b in table]
    return "\n".join(lines)
