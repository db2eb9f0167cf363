"""bloomforge: train multilingual BLOOM-family language models the way BigScience did."""

__version__ = "0.1.0"
