"""Sphinx configuration of the telecard documentation.

Sphinx is the documentation tool of CPython, pyserial, python-can and libgpiod's Python
bindings, which is why telecard uses it too: the API reference comes from the docstrings
(autodoc), the guides are reStructuredText or MyST Markdown (the datasheet is included as it is),
and `sphinx.ext.doctest` runs the examples against the simulated card. `.ci/docs.sh` builds the
site with warnings as errors and runs the doctests.
"""

from __future__ import annotations

import sys
from pathlib import Path

# telecard's own extension (cause tables, API completeness) is part of the docs, not the package.
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "telecard"
author = "the telecard developers"
copyright = "the telecard developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "telecard_causes",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

# Docstrings quote names in backticks: link them where they name a documented object.
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Names every example may use: the examples that run pytest-style tests build their cards.
doctest_global_setup = """
import telecard
from firmware_sim.demo_plan import simulated_card
"""

# Option names such as --telecard-device keep their two hyphens.
smartquotes_action = "qe"

html_theme = "alabaster"
html_title = "telecard"
