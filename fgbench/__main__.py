"""``python -m fgbench`` (also what ``torchrun -m fgbench`` runs)."""

from fgbench.cli import main

main()
