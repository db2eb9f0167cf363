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


# Luccioni et al. 2022, table 4: (model, inputs, CO2eq t, CO2eq x PUE t, PUE), published rounded
# to the tonne. The inputs are the table's own (energy, PUE, grid) except where noted.
PAPER_TABLE_4 = [
    # Gopher: 1,066 MWh, PUE 1.08, 330 gCO2eq/kWh -> 352 t and 380 t.
    ("Gopher", ["--energy-mwh", "1066", "--grid-gco2-per-kwh", "330"], 352, 380, 1.08),
    # BLOOM from the repo's own tables: A100 TDP 400 W, the French grid's 57 g (the paper's);
    # 1,082,990 GPU-hours -> 433 MWh -> 25 t and 30 t.
    ("BLOOM", ["--gpu-hours", "1082990", "--gpu", "a100-80gb", "--country", "FRA"], 25, 30, 1.2),
    # GPT-3: the table's 1,287 MWh is Patterson et al. 2021's figure, which already includes
    # their PUE of 1.1 (their MWh = hours x processors x power x PUE); the IT energy is
    # 1,287 / 1.1 = 1,170 MWh, at 429 gCO2eq/kWh -> 502 t and 552 t.
    ("GPT-3", ["--energy-mwh", "1170", "--grid-gco2-per-kwh", "429"], 502, 552, 1.1),
]


@pytest.mark.parametrize(("model", "inputs", "without", "with_pue", "pue"), PAPER_TABLE_4)
def test_cli_carbon_prints_both_columns_of_the_paper_table(
    capsys, model, inputs, without, with_pue, pue
):
    argv = ["carbon", *inputs, "--pue", str(pue)]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["co2_tonnes_without_pue"] == pytest.approx(without, abs=0.5), model
    assert r["co2_tonnes_with_pue"] == pytest.approx(with_pue, abs=0.5), model
    # The columns differ by exactly the PUE, for energy and for emissions.
    assert r["co2_tonnes_with_pue"] == pytest.approx(r["co2_tonnes_without_pue"] * pue, rel=1e-12)
    assert r["energy_mwh_with_pue"] == pytest.approx(r["energy_mwh_without_pue"] * pue, rel=1e-12)
    assert r["co2_tonnes"] == r["co2_tonnes_with_pue"]  # the key older callers read
    if model == "BLOOM":
        assert r["energy_mwh_without_pue"] == pytest.approx(433, abs=0.5)

    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "without PUE" in text and f"with PUE (x {pue:g})" in text
    energy_row = next(line for line in text.splitlines() if line.startswith("energy "))
    co2_row = next(line for line in text.splitlines() if line.startswith("emissions "))
    # Left the figure without PUE, right the one with it; MWh to 0.1, tonnes to 0.01.
    for key, row, unit, step in (
        ("energy_mwh", energy_row, "MWh", 0.1),
        ("co2_tonnes", co2_row, "tCO2eq", 0.01),
    ):
        shown = [float(v.replace(",", "")) for v in row.split()[1:] if v != unit]
        assert shown == [
            pytest.approx(r[f"{key}_without_pue"], abs=step / 2 + 1e-9),
            pytest.approx(r[f"{key}_with_pue"], abs=step / 2 + 1e-9),
        ], row
