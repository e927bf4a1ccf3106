"""Exercises: small broken Flask apps to fix yourself, graded by the own-app
check (loadtests.check) under the server shapes each one names.

Each folder NN_name/ holds the learner's app.py, a README (the symptom, what
to change, what to read) and spec.toml (the check's spec); the reference
fixes are under solutions/. `python -m exercises` (the Makefile's practice,
grade, watch, hint and solution targets) lists, grades and hints.
"""
