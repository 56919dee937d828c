"""``python -m poolarch ...`` (also what ``torchrun -m poolarch train ...`` runs)."""
import sys

from .cli import main

sys.exit(main())
