"""Forms for clients and mailboxes; they validate as you type.

Each form is a modal screen whose result is a typed value (or None when
cancelled). The checks are the registry's own (``parse_network``,
``validate_client_name``, ``normalize_mailbox``, ``check_strength``), so the
form refuses exactly what the server would.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Footer, Input, Label, Static

from ....admin.passwords import PasswordError, check_strength
from ....admin.registry import (
    RegistryError,
    normalize_mailbox,
    parse_network,
    validate_client_name,
)


@dataclass(frozen=True)
class ClientFormResult:
    name: str
    networks: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class MailboxFormResult:
    address: str
    password: str


def split_networks(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,;]+", text.strip()) if part]


# -- validators --------------------------------------------------------------------------

class ClientName(Validator):
    def __init__(self, taken: Iterable[str], original: str = "") -> None:
        super().__init__()
        self.taken = {name.lower() for name in taken} - {original.lower()}

    def validate(self, value: str) -> ValidationResult:
        try:
            name = validate_client_name(value)
        except RegistryError as exc:
            return self.failure("a name is needed" if not value.strip() else str(exc))
        if name.lower() in self.taken:
            return self.failure(f"a client named {name!r} already exists")
        return self.success()


class Networks(Validator):
    def validate(self, value: str) -> ValidationResult:
        items = split_networks(value)
        if not items:
            return self.failure("at least one network is needed, e.g. 192.0.2.0/24 or 203.0.113.7")
        for item in items:
            try:
                parse_network(item)
            except RegistryError as exc:
                try:
                    loose = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    return self.failure(str(exc))
                return self.failure(f"{item} has host bits set: did you mean {loose}?")
        return self.success()


class MailboxAddress(Validator):
    def __init__(self, local_domains: tuple[str, ...], taken: Iterable[str]) -> None:
        super().__init__()
        self.local_domains = local_domains
        self.taken = set(taken)

    def validate(self, value: str) -> ValidationResult:
        if not value.strip():
            return self.failure(f"an address is needed, e.g. alice@{self.local_domains[0]}")
        try:
            key = normalize_mailbox(value, self.local_domains)
        except RegistryError as exc:
            return self.failure(str(exc))
        if key in self.taken:
            return self.failure(f"mailbox {key} already exists")
        return self.success()


class Password(Validator):
    def validate(self, value: str) -> ValidationResult:
        try:
            check_strength(value)
        except PasswordError as exc:
            return self.failure(str(exc))
        return self.success()


class SameAs(Validator):
    def __init__(self, other: Input) -> None:
        super().__init__()
        self.other = other

    def validate(self, value: str) -> ValidationResult:
        return self.success() if value == self.other.value else self.failure("the passwords do not match")


# -- the form mechanics ---------------------------------------------------------------------

class FormScreen(ModalScreen):
    """Fields with live checks; Save is enabled only when every field passes."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.form_title = title
        self._touched: set[str] = set()
        self._hints: dict[str, str] = {}

    def field(self, label: str, field: Input, hint: str = "") -> ComposeResult:
        self._hints[field.id or ""] = hint
        field.validate_on = set()  # the form decides when to show a problem
        yield Label(label, classes="field-label")
        yield field
        yield Static(hint, id=f"{field.id}-message", classes="field-message", markup=False)

    def fields(self) -> ComposeResult:
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog form"):
            yield Label(self.form_title, classes="dialog-title")
            yield from self.fields()
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")
        yield Footer()

    @property
    def inputs(self) -> list[Input]:
        return [i for i in self.query(Input) if not i.disabled]

    def on_mount(self) -> None:
        for field in self.inputs:
            if field.value:
                self._touched.add(field.id or "")
        self._check_all()
        first = next((f for f in self.inputs if not self._result(f).is_valid), None)
        (first or self.inputs[0]).focus()

    @staticmethod
    def _result(field: Input) -> ValidationResult:
        return ValidationResult.merge([v.validate(field.value) for v in field.validators])

    def _show(self, field: Input) -> bool:
        result = self._result(field)
        message = self.query_one(f"#{field.id}-message", Static)
        touched = (field.id or "") in self._touched
        if result.is_valid:
            message.update(self._hints.get(field.id or "", ""))
        elif touched:
            message.update(f"✗ {result.failure_descriptions[0]}")
        message.set_class(touched and not result.is_valid, "-error")
        field.set_class(touched and not result.is_valid, "-invalid")
        field.set_class(touched and result.is_valid, "-valid")
        return result.is_valid

    def _check_all(self) -> bool:
        valid = all([self._show(field) for field in self.inputs])
        self.query_one("#save", Button).disabled = not valid
        return valid

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._touched.add(event.input.id or "")
        self._check_all()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter saves a valid form; otherwise it moves on to the next field still to fill in."""
        event.stop()
        fields = self.inputs
        index = fields.index(event.input)
        pending = [f for f in fields[index + 1:] + fields[:index + 1] if not self._result(f).is_valid]
        if pending:
            self._touched.add(event.input.id or "")
            self._check_all()
            pending[0].focus()
        else:
            self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()

    def action_save(self) -> None:
        self._touched.update(f.id or "" for f in self.inputs)
        if not self._check_all():
            next(f for f in self.inputs if not self._result(f).is_valid).focus()
            return
        self.dismiss(self.result())

    def action_cancel(self) -> None:
        self.dismiss(None)

    def result(self):
        raise NotImplementedError


class ClientForm(FormScreen):
    """Add or edit a registered client; the result is a ClientFormResult or None."""

    def __init__(self, *, taken: Iterable[str], name: str = "", networks: Iterable[str] = (),
                 note: str = "", editing: str = "") -> None:
        super().__init__(f"Edit client {editing}" if editing else "Register a client")
        self.taken = list(taken)
        self.editing = editing
        self.values = (name or editing, ", ".join(networks), note)

    def fields(self) -> ComposeResult:
        name, networks, note = self.values
        yield from self.field("Name", Input(name, placeholder="office", compact=True, id="name",
                                            validators=[ClientName(self.taken, self.editing)]),
                              "letters, digits, space, '.', '_' or '-'")
        yield from self.field("Networks", Input(networks, placeholder="192.0.2.0/24, 2001:db8::/48",
                                                compact=True, id="networks", validators=[Networks()]),
                              "addresses or CIDR networks, separated by commas")
        yield from self.field("Note", Input(note, placeholder="optional", compact=True, id="note"))

    def result(self) -> ClientFormResult:
        values = {i.id: i.value for i in self.query(Input)}
        networks = tuple(str(parse_network(n)) for n in split_networks(values["networks"]))
        return ClientFormResult(name=values["name"].strip(), networks=networks, note=values["note"].strip())


class MailboxForm(FormScreen):
    """Create a mailbox, or set the password of ``address``; the result is a MailboxFormResult or None."""

    def __init__(self, *, local_domains: tuple[str, ...], taken: Iterable[str], address: str = "") -> None:
        super().__init__(f"New password for {address}" if address else "Create a mailbox")
        self.local_domains = local_domains
        self.taken = [] if address else list(taken)
        self.address = address

    def fields(self) -> ComposeResult:
        domains = ", ".join(self.local_domains)
        yield from self.field("Address", Input(self.address, placeholder=f"alice@{self.local_domains[0]}",
                                               compact=True, id="address", disabled=bool(self.address),
                                               validators=[MailboxAddress(self.local_domains, self.taken)]),
                              f"local domains: {domains}")
        password = Input(placeholder="at least 8 characters", password=True, compact=True, id="password",
                         validators=[Password()])
        yield from self.field("Password", password)
        yield from self.field("Again", Input(placeholder="the same password", password=True, compact=True,
                                             id="again", validators=[SameAs(password)]))

    def result(self) -> MailboxFormResult:
        address = self.address or normalize_mailbox(self.query_one("#address", Input).value, self.local_domains)
        return MailboxFormResult(address=address, password=self.query_one("#password", Input).value)
