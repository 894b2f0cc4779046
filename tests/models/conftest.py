"""Shared setup of the model tests.

pytest's default (prepend) import mode puts this file's folder on ``sys.path`` when it loads it, so
the tests in ``families/`` and ``io/`` import the twin builders with ``from parity_utils import ...``.
"""
