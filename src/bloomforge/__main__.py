"""`python -m bloomforge ...` (what `torchrun -m bloomforge` runs)."""

from bloomforge.cli import main

raise SystemExit(main())
