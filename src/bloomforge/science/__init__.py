"""The science stage: planning (compute, memory, time), scaling-law fits, energy and CO2."""
