"""Energy and CO2 against the BLOOM carbon paper (Luccioni et al. 2022) and hand arithmetic."""

from __future__ import annotations

import json

import pytest

from bloomforge.cli import main
from bloomforge.errors import BloomforgeError
from bloomforge.science.carbon import (
    co2_tonnes,
    energy_from_gpu_hours,
    energy_from_mwh,
    grid_intensity,
)


def test_bloom_dynamic_energy_and_emissions_match_the_paper():
    # Luccioni et al. 2022: 1,082,990 GPU-hours; 433,196 kWh dynamic consumption (= x 400 W);
    # 57 gCO2eq/kWh -> 24.69 tCO2eq.
    e = energy_from_gpu_hours(1_082_990, 400.0)
    assert e["energy_mwh"] == pytest.approx(433.196, rel=1e-6)
    assert co2_tonnes(e["energy_mwh"], 57.0) == pytest.approx(24.69, abs=0.01)
    assert co2_tonnes(energy_from_mwh(433.0)["energy_mwh"], 57.0) == pytest.approx(24.7, abs=0.05)


def test_utilisation_pue_and_node_overhead_by_hand():
    e = energy_from_gpu_hours(1.08e6, 400.0, utilisation=0.9, pue=1.2)
    assert e["it_energy_mwh"] == pytest.approx(1.08e6 * 0.36 / 1000)  # 388.8 MWh
    assert e["energy_mwh"] == pytest.approx(466.56)
    assert co2_tonnes(e["energy_mwh"], 57.0) == pytest.approx(26.594, abs=1e-3)
    e = energy_from_gpu_hours(1000, 700.0, utilisation=0.5, node_overhead_w=150.0)
    assert e["energy_mwh"] == pytest.approx(1000 * 500 / 1e6)
    assert energy_from_mwh(433.0, pue=1.2)["energy_mwh"] == pytest.approx(519.6)


def test_country_table():
    assert grid_intensity("FRA").gco2_per_kwh == 57.0
    assert grid_intensity("fra").gco2_per_kwh == 57.0
    for code in ("USA", "DEU", "GBR", "CHN", "IND"):
        g = grid_intensity(code)
        assert 100 < g.gco2_per_kwh < 800 and g.source
    with pytest.raises(BloomforgeError, match="FRA"):
        grid_intensity("FRX")


def test_cli_carbon_text_json_and_errors(capsys):
    assert main(["carbon", "--energy-mwh", "433", "--grid-gco2-per-kwh", "57"]) == 0
    assert "24.68 tCO2eq" in capsys.readouterr().out
    argv = [
        "carbon",
        "--gpu-hours",
        "1.08e6",
        "--gpu",
        "a100-80gb",
        "--utilisation",
        "0.9",
        "--pue",
        "1.2",
        "--country",
        "FRA",
        "--json",
    ]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["gpu_power_w"] == 400.0 and r["co2_tonnes"] == pytest.approx(26.594, abs=1e-3)
    assert main(["carbon", "--energy-mwh", "433"]) == 2
    assert "--country" in capsys.readouterr().err
    assert main(["carbon", "--energy-mwh", "433", "--country", "XYZ"]) == 2
    assert "no grid intensity" in capsys.readouterr().err
