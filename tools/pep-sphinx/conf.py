"""Sphinx configuration that renders PEP.rst (and nothing else) as HTML.

Used by ``make docs``:
``python -m sphinx -W -b html -c tools/pep-sphinx . build/pep-html``.
"""

project = "Micro-threads for CPython (PEP draft)"
root_doc = "PEP"
include_patterns = ["PEP.rst"]
exclude_patterns = ["build", ".git"]
html_theme = "alabaster"
html_title = "PEP: Micro-threads: suspending Python frames by deferral"
