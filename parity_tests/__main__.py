"""python -m parity_tests check module:TorchFactory module:NnxFactory --data file.npz"""
import sys

from parity_tests.engine.port_cli import main

sys.exit(main())
