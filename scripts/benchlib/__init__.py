"""Sections of scripts/bench.py (see its docstring)."""
