"""`python -m poetry_model.prosody`: check a poem's form, rhyme and tones."""
import sys

from . import main

sys.exit(main())
