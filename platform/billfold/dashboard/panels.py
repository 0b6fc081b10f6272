"""What a plugin gives the operator dashboard (``billfold_dashboard_panels``): panels on an
organization's page, each with optional actions.

A panel is a title and its content: an HTML fragment (``html``, inserted as it is, so the plugin
escapes what it interpolates) or a Jinja template (``template``: source text, rendered with
autoescaping and ``context``). An action is a form the dashboard draws under the panel: its fields,
a required reason, a confirmation step and the CSRF token are the dashboard's. When the operator
confirms, the dashboard checks the session, the CSRF token and the reason, opens a transaction,
calls ``run`` with it, and writes the action's one audit row (``audit_action``, who, reason, the
``before``/``after`` that ``run`` returns, tracking id) in that same transaction. A plugin never
handles sign-in, CSRF or the audit trail itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

FieldKind = Literal["text", "number", "select", "date", "checkbox"]


class DashboardField(msgspec.Struct, frozen=True, kw_only=True):
    """One input of an action's form. Its value reaches ``run`` as a string (``""`` when empty;
    a checkbox is ``"on"`` or ``""``); ``choices`` are ``(value, label)`` pairs of a select."""

    name: str
    label: str
    kind: FieldKind = "text"
    required: bool = False
    choices: Sequence[tuple[str, str]] = ()
    default: str = ""
    help: str = ""


class ActionCall(msgspec.Struct, frozen=True, kw_only=True):
    """What ``run`` receives: the writing transaction, the organization, the form's values (only
    the action's declared fields), the operator's reason and who acts (``dashboard:<label>``)."""

    conn: AsyncConnection
    org_id: uuid.UUID
    values: Mapping[str, str]
    reason: str
    who: str


class ActionResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``run`` returns: the message shown to the operator and what the audit row records.

    Raise a :class:`billfold.BillfoldError` (``ValidationFailed``, ``NotFound``...) to refuse: the
    transaction rolls back, no audit row is written and the operator sees the message."""

    message: str
    before: Any = None
    after: Any = None
    target: str | None = None


class DashboardAction(msgspec.Struct, frozen=True, kw_only=True):
    """A form under a panel. ``name`` is unique within the plugin's panels (letters, digits, ``-``
    and ``_``); ``audit_action`` names the audit row (``<thing>.<verb>``, e.g. ``tier.pinned``);
    ``confirm`` is the question of the confirmation step."""

    name: str
    label: str
    audit_action: str
    run: Callable[[ActionCall], Awaitable[ActionResult]]
    fields: Sequence[DashboardField] = ()
    confirm: str = "Apply this change?"
    danger: bool = False


class DashboardPanel(msgspec.Struct, frozen=True, kw_only=True):
    """A section of an organization's dashboard page."""

    title: str
    html: str = ""
    template: str | None = None
    context: Mapping[str, Any] = msgspec.field(default_factory=dict)
    actions: Sequence[DashboardAction] = ()
