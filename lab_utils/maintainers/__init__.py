"""Maintainers' tools: executing and stamping notebooks, the Sphinx extension, student editions.

Notebooks never import this subpackage; ``make execute``, ``make book`` and the tests do.
"""
