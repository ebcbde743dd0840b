"""What the end-to-end, Compose and bench suites share: clients, forms, loads and checks.

Test modules and conftest files import from here (`from support.forms import submit`; tests/ is
on pytest's pythonpath), never from one another.
"""
