"""python -m jaxport.translate: see jaxport/translate/cli.py."""
import sys

from jaxport.translate.cli import main

sys.exit(main())
