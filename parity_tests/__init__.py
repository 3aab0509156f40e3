"""The parity suite, and the parity harness for users' own ports (parity_tests.harness).

The suite's helper modules (parity.py, ladder.py, ...) import each other by their
top-level names; conftest.py puts this directory on sys.path for them. The harness
modules (harness.py and the port_*.py and locate.py beside it) import with
package-qualified names, so `from parity_tests.harness import check_port` works from
an installed package without that path.
"""
