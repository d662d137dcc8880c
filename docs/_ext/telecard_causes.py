"""telecard's Sphinx extension: the cause tables, fixture signatures, a complete API reference.

The `telecard-causes` directive renders `telecard.causes.NORMALISATION`, `REJECT_VALUES`,
`telecard.q850`'s name tables and `telecard.sip`'s RFC 3398 tables, the one copy of each, at
build time, so the docs never drift from the code. Every name in `telecard.__all__` must be
documented as `telecard.NAME`; one that is not is a warning, so a new export fails the docs
build until api.rst has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from _pytest.fixtures import FixtureFunctionDefinition
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import ExtensionMetadata

import telecard
from telecard import q850, sip
from telecard.causes import NORMALISATION, REJECT_VALUES, WITHOUT_VALUE, Cause, normalise_value

logger = logging.getLogger(__name__)


def _list_table(title: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in (header, *rows):
        for i, cell in enumerate(row):
            lines.append(f"   {'*' if i == 0 else ' '} - {cell}")
    lines.append("")
    return lines


def _value(value: int) -> str:
    return f"{value} {q850.cause_name(value)}"


def _tables(which: str) -> list[str]:
    if which == "normalisation":
        rows = [
            (f"``{cause.name}``", "; ".join(_value(v) for v in values))
            for cause, values in NORMALISATION.items()
        ]
        rows += [(f"``{cause.name}``", text) for cause, text in WITHOUT_VALUE.items()]
        return _list_table("Cause from the Q.850 value", ("Cause", "Q.850 values"), rows)
    if which == "values":
        return _list_table(
            "Every assigned Q.850 value",
            ("value", "Q.850 name", "Cause"),
            (
                (str(v), name, f"``{normalise_value(v).name}``")
                for v, name in sorted(q850.CAUSE_NAMES.items())
            ),
        )
    if which == "reject":
        return _list_table(
            "What reject() sends",
            ("cause", "Q.850 value sent"),
            ((f"``{c.name}``", _value(v)) for c, v in REJECT_VALUES.items()),
        )
    if which == "q850-sip":
        rows = [(_value(v), str(status)) for v, status in sip.Q850_TO_SIP.items()]
        return _list_table(
            "Q.850 value to SIP response (RFC 3398 §7.2.4.1)", ("Q.850 value", "SIP"), rows
        )
    if which == "q850-sip-classes":
        rows = [(f"{c << 4}-{(c << 4) + 15}", str(s)) for c, s in sip.CLASS_DEFAULT_SIP.items()]
        return _list_table("Values without a row, by class", ("Q.850 values", "SIP"), rows)
    if which == "sip-q850":
        rows = [(str(status), _value(v)) for status, v in sip.SIP_TO_Q850.items()]
        rows.append(("any other 400-699", _value(sip.SIP_DEFAULT_Q850)))
        return _list_table(
            "SIP response to Q.850 value (RFC 3398 §8.2.6.1)", ("SIP", "Q.850 value"), rows
        )
    if which == "locations":
        return _list_table(
            "Cause locations",
            ("location", "Q.850 name"),
            ((str(k), v) for k, v in sorted(q850.LOCATION_NAMES.items())),
        )
    raise ValueError(f"unknown cause table {which!r}")


class CauseTable(SphinxDirective):
    """`.. telecard-causes:: NAME`, NAME one of normalisation, values, reject, locations,
    q850-sip, q850-sip-classes, sip-q850."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """Parse the generated list-table as if it were written in the page."""
        try:
            lines = _tables(self.arguments[0])
        except ValueError as exc:
            raise self.error(str(exc)) from exc
        container = nodes.container()
        source = f"<telecard-causes {self.arguments[0]}>"
        self.state.nested_parse(StringList(lines, source), self.content_offset, container)
        return list(container.children)


def _fixture_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    # A test asks for a fixture by name: its `request` parameter is pytest's, not the test's.
    if isinstance(obj, FixtureFunctionDefinition):
        return "", None
    return None


def _check_api_reference(app: Sphinx, env: BuildEnvironment) -> None:
    documented = {name for name, *_ in env.get_domain("py").get_objects()}
    for name in telecard.__all__:
        if f"telecard.{name}" not in documented:
            logger.warning("telecard.%s is exported but not in the API reference", name)


def setup(app: Sphinx) -> ExtensionMetadata:
    """Register the directive and the checks."""
    missing = set(Cause) - set(NORMALISATION) - set(WITHOUT_VALUE)
    if missing:
        raise ExtensionError(f"the cause table has no row for {sorted(c.name for c in missing)}")
    app.add_directive("telecard-causes", CauseTable)
    app.connect("autodoc-process-signature", _fixture_signature)
    app.connect("env-check-consistency", _check_api_reference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
