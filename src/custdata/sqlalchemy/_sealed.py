"""Objects hold sealed values: a customer-data attribute decrypts when it is read.

An ORM entity load puts each customer value into the instance's state as a
:class:`SealedRow` (one per row, shared by the row's customer-data
attributes) or, where a row's values have several subjects, a
:class:`SealedValue` per value -- the envelope as stored, the associated-data
tail of its row's subject and the grant of the batch that fetched it -- never
as plaintext.
The mapped class's attribute (a :class:`SealedAttribute`) opens it when the
application reads it, under the access context in force *at that read*:

* the context that announced the batch (the fetching cursor made and recorded
  one decision for the batch's permitted fields) reads without a new decision;
* any other context -- another purpose, another actor, none at all, a copy or
  an unpickled object -- makes and records its own decision for that field of
  that object (one per context, object and field), which raises
  :class:`custdata.PurposeViolationError` and friends if it is refused.

So ``__dict__``, ``loaded_value``, pickles, copies, merged or re-added objects
and SQLAlchemy's logged rows hold the sealed form, and only the fields actually
read are decrypted. A value the application assigned itself is its own
until it is flushed: the flush puts the envelope it wrote in its place, in a
:class:`SealedRow` without a grant (see ``_runtime._seal_flushed``).
"""

from __future__ import annotations

import base64
import binascii

from typing import Any

from sqlalchemy.orm.attributes import InstrumentedAttribute

from custdata._context import _access, _custodian, _default_custodian
from custdata._decision import Action
from custdata._errors import ConfigurationError, KeyDestroyedError
from custdata._policy import FieldPolicy
from custdata.crypto._legacy import looks_sealed
from custdata.crypto._subject import DESTROYED, WITHDRAWN_AT

from ._binding import FieldBinding, subject_parts


__all__ = [
    "MASK_TEXT",
    "Grant",
    "SealedAttribute",
    "SealedRow",
    "SealedValue",
    "reveal",
    "seal_attribute",
]

#: What a field revealed only as a mask reads as. It is the same for every
#: value, because a denied value is never decrypted, not even to mask it.
MASK_TEXT = "***"

_access_now = _access.get


class Grant:
    """What one recorded decision lets its context open (internal).

    Attributes:
        context: The access context the decision was made under.
        custodian: The custodian that decided.
        opens: Binding -> the field cipher, or the mask text for a field
            revealed only as its mask. Bindings not in it were not granted.
    """

    __slots__ = ("context", "custodian", "opens")

    def __init__(
        self, context: object, custodian: object, opens: dict[FieldBinding, Any]
    ) -> None:
        self.context = context
        self.custodian = custodian
        self.opens = opens

    def __repr__(self) -> str:
        return "<custdata grant>"


class _SealedForm:
    """What every sealed form shows of itself: nothing (internal)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<custdata sealed value>"

    __str__ = __repr__


class SealedValue(_SealedForm):
    """A customer value as an ORM object holds it: the stored envelope, sealed.

    Its ``repr`` and ``str`` name nothing; equality compares envelopes (so an
    unchanged value is not written back); a copy or a pickle keeps the
    envelope and drops the grant, so whoever opens it later makes their own
    recorded decision.

    Attributes:
        data: The envelope as stored (bytes, or its base64 text), or ``None``
            for NULL (whether a field is set is for its purposes only).
        tail: The associated-data tail of the row's subject, or ``None``.
        subject: The row's subject id as fetched, or ``None``.
        grant: The :class:`Grant` that covers reading it, or ``None``.
        keys: For a per-subject-key column, the subject keys fetched with the
            value's batch (one dict shared by the batch, in memory only: never
            copied or pickled), or ``None``.
    """

    __slots__ = ("data", "grant", "keys", "subject", "tail")

    def __init__(
        self,
        data: Any,
        tail: bytes | None = None,
        subject: object = None,
        grant: Grant | None = None,
        keys: dict[bytes | None, Any] | None = None,
    ) -> None:
        self.data = data
        self.tail = tail
        self.subject = subject
        self.grant = grant
        self.keys = keys

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not SealedValue:
            return NotImplemented
        return bool(self.data == other.data)

    def __hash__(self) -> int:
        return hash(self.data)

    def __reduce__(self) -> tuple[Any, ...]:
        # Never the grant: a copy or an unpickled object decides afresh.
        return (SealedValue, (self.data, self.tail, self.subject))


class SealedRow(_SealedForm):
    """The customer values of one fetched row, sealed: one object per row.

    An entity load puts the same object into every customer-data attribute
    of the row's instance (one object per row rather than one per value:
    fewer objects for the garbage collector, the same cost at any N); each
    attribute picks its own envelope out of it by ``table.column``. It
    behaves as :class:`SealedValue` does: its ``repr`` and ``str`` name
    nothing, equality compares envelopes, a copy or a pickle drops the grant.

    Attributes:
        values: The row's envelopes as stored (``None`` for NULL), in the
            order of :attr:`at`.
        at: ``table.column`` -> index into :attr:`values` (one mapping shared
            by every row the statement loads).
        tail: The associated-data tail of the row's subject, or ``None``.
        subject: The row's subject id as fetched (after a flush, the
            object's own), or ``None``.
        grant: The :class:`Grant` that covers reading the row's fields, or
            ``None``.
        keys: For per-subject-key columns, ``table.column`` -> the subject
            keys fetched with the batch (in memory only), or ``None``.
    """

    __slots__ = ("at", "grant", "keys", "subject", "tail", "values")

    def __init__(  # noqa: PLR0917 - one call per row, positional on purpose
        self,
        values: tuple[Any, ...],
        at: dict[str, int],
        tail: bytes | None = None,
        subject: object = None,
        grant: Grant | None = None,
        keys: dict[str, dict[bytes | None, Any]] | None = None,
    ) -> None:
        self.values = values
        self.at = at
        self.tail = tail
        self.subject = subject
        self.grant = grant
        self.keys = keys

    def stored(self, b: FieldBinding) -> Any:
        """The envelope of *b*'s column as stored (to write it back unchanged).

        Raises:
            ConfigurationError: If the row holds no value of that column.
        """
        return self.values[self.index(b.where)]

    def index(self, where: str) -> int:
        """The position of the ``table.column`` *where* in :attr:`values`.

        Raises:
            ConfigurationError: If the row holds no value of that column.
        """
        index = self.at.get(where)
        if index is None:
            raise ConfigurationError(
                f"{where}: this sealed value belongs to another column"
            )
        return index

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not SealedRow:
            return NotImplemented
        return bool(
            self.values == other.values and (self.at is other.at or self.at == other.at)
        )

    def __hash__(self) -> int:
        return hash(self.values)

    def __reduce__(self) -> tuple[Any, ...]:
        # Never the grant nor the keys: a copy or an unpickled object decides afresh.
        return (SealedRow, (self.values, self.at, self.tail, self.subject))


def _parts(
    value: SealedValue | SealedRow, b: FieldBinding, where: str
) -> tuple[Any, bytes | None, Any]:
    """(envelope, tail, subject keys) of *b*'s value in a sealed value or row."""
    if value.__class__ is SealedValue:
        return value.data, value.tail, value.keys
    row: SealedRow = value  # type: ignore[assignment]
    keys = row.keys
    return (
        row.values[row.index(where)],
        row.tail if b.subject_key is not None else None,
        None if keys is None else keys.get(where),
    )


class SealedAttribute(InstrumentedAttribute[Any]):
    """A customer-data attribute of a mapped class: opens sealed values on read.

    One subclass per attribute (see :func:`seal_attribute`), whose class
    attributes say which column it reads; instances keep
    ``InstrumentedAttribute``'s layout.
    """

    __slots__ = ()

    #: The column's binding, its ``table.column`` and whether it stores base64 text.
    custdata_binding: FieldBinding
    custdata_where: str = "?.?"
    custdata_text: bool = False

    def __get__(self, instance: object | None, owner: Any) -> Any:
        if instance is None:
            return self
        try:
            # InstrumentedAttribute.__get__ for a loaded column, inlined.
            value = instance.__dict__[self.key]
        except (KeyError, AttributeError):
            value = InstrumentedAttribute.__get__(self, instance, owner)
        cls = value.__class__
        if cls is SealedRow:
            # The common case (an entity load): one dict lookup for the
            # grant's opener, one for the envelope, one AES-GCM open.
            b = self.custdata_binding
            grant = value.grant
            if grant is not None:
                opener = grant.opens.get(b)
                if (
                    opener is not None
                    and grant.context is _access_now()
                    and grant.custodian is (_custodian.get() or _default_custodian[0])
                ):
                    if opener.__class__ is not str and not self.custdata_text:
                        where = self.custdata_where
                        index = value.at.get(where)
                        data = None if index is None else value.values[index]
                        keys = value.keys
                        if data is not None and keys is None:
                            if b.subject_key is None:
                                return opener.read(data)
                            tail = value.tail
                            if tail is not None:
                                return opener.read(data, tail)
                        elif data is not None and b.subject_key is not None:
                            # Under per-subject keys: the batch's keys, held.
                            tail = value.tail
                            held = keys.get(where)
                            if tail is not None and held is not None:
                                try:
                                    return opener.held(data, tail, held)
                                except KeyDestroyedError:
                                    if not _withdrawn_since(held, tail):
                                        raise  # refused, and recorded, at the load
                                    # Shredded since the load: the refusal
                                    # is decided and recorded now.
                                    return reveal(b, value, text=self.custdata_text)
                    return _open(
                        opener,
                        *_parts(value, b, self.custdata_where),
                        b,
                        self.custdata_text,
                    )
            return reveal(b, value, text=self.custdata_text)
        if cls is not SealedValue:
            return value
        b = self.custdata_binding
        grant = value.grant
        if grant is not None:
            opener = grant.opens.get(b)
            if (
                opener is not None
                and grant.context is _access_now()
                and grant.custodian is (_custodian.get() or _default_custodian[0])
            ):
                if opener.__class__ is str or value.data is None:
                    return _open(
                        opener,
                        value.data,
                        value.tail,
                        value.keys,
                        b,
                        self.custdata_text,
                    )
                tail = value.tail
                if (
                    tail is not None or b.subject_key is None
                ) and not self.custdata_text:
                    # The common case, without the call: an envelope to open.
                    if value.keys is not None:
                        try:
                            return opener.held(value.data, tail, value.keys)
                        except KeyDestroyedError:
                            if not _withdrawn_since(value.keys, tail):
                                raise  # refused, and recorded, at the load
                            # Shredded since the load (see above).
                            return reveal(b, value, text=self.custdata_text)
                    return opener.read(value.data, tail)
                return _open(
                    opener, value.data, value.tail, value.keys, b, self.custdata_text
                )
        return reveal(b, value, text=self.custdata_text)


def _withdrawn_since(held: dict[bytes | None, Any], tail: bytes | None) -> bool:
    """Whether *tail*'s key was withdrawn after its batch was loaded, not yet recorded.

    :meth:`~custdata.crypto.FieldCipher.current_held` notes such subjects
    (a subject found destroyed at the load was refused, and recorded, then):
    the first read that finds one is decided again, so its refusal is
    recorded once.
    """
    withdrawn = held.get(WITHDRAWN_AT)
    if not withdrawn or tail not in withdrawn:
        return False
    withdrawn.discard(tail)
    return True


def _open(  # noqa: PLR0917 - internal
    opener: Any,
    data: Any,
    tail: bytes | None,
    keys: dict[bytes | None, Any] | None,
    b: FieldBinding,
    text: bool,
) -> Any:
    if data is None:
        return None
    if opener.__class__ is str:
        return opener
    if tail is None and b.subject_key is not None:
        # A subject-bound value in a row without a subject id reads as None.
        return None
    if text:
        data = stored_envelope(data)
    if keys is not None and getattr(opener, "subject_keys", None) is not None:
        return opener.held(data, tail, keys)
    return opener.read(data, tail)


def stored_envelope(value: Any) -> Any:
    """The envelope a text-storage column holds as base64 (internal).

    A value that is not the base64 text of something shaped like an envelope
    is returned as it is: the cipher's ``open_value`` then refuses it with
    :class:`~custdata.DecryptionError` (or, in the transitional read mode,
    reads it as legacy plaintext).
    """
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return value
    return blob if looks_sealed(blob) else value


_FIELDS: dict[
    FieldBinding, tuple[FieldPolicy | None, dict[str, FieldPolicy | None]]
] = {}


def _fields_of(b: FieldBinding) -> dict[str, FieldPolicy | None]:
    """One field mapping object per binding (the custodian memoises by identity)."""
    entry = _FIELDS.get(b)
    if entry is None or entry[0] is not b.field:
        entry = (b.field, {b.column or "?": b.field})
        _FIELDS[b] = entry
    return entry[1]


def reveal(
    b: FieldBinding, value: SealedValue | SealedRow, *, text: bool = False
) -> Any:
    """Decide, record and open one sealed value under the context in force.

    Raises:
        ConfigurationError: If no custodian is current.
        AccessDeniedError: If the context may not read the field (recorded,
            with the row's subject).
        DecryptionError: If the envelope is not authentic for this column and
            subject.
    """
    custodian = _custodian.get() or _default_custodian[0]
    if custodian is None:
        raise ConfigurationError(
            "no custodian is current: call custodian.make_current() or use custodian.activate()"
        )
    subject = value.subject
    subjects: tuple[str, ...] = ()
    if subject is not None:
        subjects = (subject_parts(subject, b.subject_kind)[0],)
    data, tail, keys = _parts(value, b, b.where)
    gone: tuple[str, ...] = ()
    if b.key_scope == "subject" and not b.legacy_plaintext and tail is not None:
        # Whether the subject was crypto-shredded, before the decision: its
        # refusal is recorded then, never a reveal (the batch's keys, or
        # one lookup that the value is then opened with).
        cipher = b.cipher(custodian)
        if keys is None:
            keys = cipher.held_keys([tail])
        elif cipher.subject_keys is not None:
            # Held since the load: checked again if a key was withdrawn since.
            keys = cipher.current_held(keys)
        if keys.get(tail) is DESTROYED:
            gone = subjects
    decision = custodian.authorize(
        action=Action.READ,
        entity=b.table,
        fields=_fields_of(b),
        subjects=subjects,
        count=1,
        unreadable=gone,
    )
    opener: Any = MASK_TEXT if decision.denied_fields else b.cipher(custodian)
    ctx = _access_now()
    if value.__class__ is SealedRow:
        # One grant for the row: keep what it already opens under this context.
        held = value.grant
        opens: dict[FieldBinding, Any] = {b: opener}
        if held is not None and held.context is ctx and held.custodian is custodian:
            opens = {**held.opens, b: opener}
        value.grant = Grant(ctx, custodian, opens)
    else:
        value.grant = Grant(ctx, custodian, {b: opener})
    return _open(opener, data, tail, keys, b, text)


def seal_attribute(attribute: Any, binding: FieldBinding, *, text: bool) -> None:
    """Make a mapped class's attribute open sealed values on read (idempotent)."""
    if isinstance(attribute, SealedAttribute):
        return
    if type(attribute) is not InstrumentedAttribute:
        return
    attribute.__class__ = type(
        "SealedAttribute",
        (SealedAttribute,),
        {
            "__slots__": (),
            "custdata_binding": binding,
            "custdata_where": binding.where,
            "custdata_text": text,
        },
    )
