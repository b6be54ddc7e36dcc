"""The composition root: the ``globaldns`` command and dev mode.

This is the one package that imports all three of :mod:`registry`, :mod:`resolver` and
:mod:`agents`; none of them imports it (see the import-linter contracts).
"""
