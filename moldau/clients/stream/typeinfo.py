"""Type descriptions (``Types.STRING()``, ``Types.TUPLE([...])``, ``Types.ROW_NAMED(...)``)
and the ``Row`` record, with PyFlink's names.

moldau moves Python objects as they are, so a type information never converts a value; it
describes a stream's records so that mistakes are caught while the job graph is built (a
field name that the row type doesn't have, a field index past a tuple's arity), and so the
plan shown in the dashboard can say what flows on an edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Row", "RowKind", "TypeInformation", "Types", "infer_type"]


class TypeInformation:
    """A stream element type. ``arity`` and ``field_names`` are known for composite types
    (tuples, rows); ``None`` means "not a composite type" or "unknown"."""

    __slots__ = ("args", "field_names", "field_types", "name")

    def __init__(self, name: str, field_types: Sequence[TypeInformation] | None = None,
                 field_names: Sequence[str] | None = None, args: tuple[Any, ...] = ()) -> None:
        self.name = name
        self.field_types = list(field_types) if field_types is not None else None
        self.field_names = list(field_names) if field_names is not None else None
        self.args = args

    @property
    def is_composite(self) -> bool:
        return self.field_types is not None

    @property
    def arity(self) -> int | None:
        return len(self.field_types) if self.field_types is not None else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TypeInformation) and (
            (self.name, self.field_types, self.field_names, self.args)
            == (other.name, other.field_types, other.field_names, other.args))

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        if self.field_types is None:
            inner = ", ".join(repr(a) for a in self.args)
            return f"{self.name}({inner})" if inner else self.name
        if self.field_names is not None:
            inner = ", ".join(f"{n}: {t!r}" for n, t in zip(self.field_names, self.field_types,
                                                             strict=True))
        else:
            inner = ", ".join(repr(t) for t in self.field_types)
        return f"{self.name}<{inner}>"


class Types:
    """Factories of :class:`TypeInformation`, as ``pyflink.common.typeinfo.Types``."""

    @staticmethod
    def STRING() -> TypeInformation:
        return TypeInformation("String")

    @staticmethod
    def BYTE() -> TypeInformation:
        return TypeInformation("Byte")

    @staticmethod
    def BOOLEAN() -> TypeInformation:
        return TypeInformation("Boolean")

    @staticmethod
    def SHORT() -> TypeInformation:
        return TypeInformation("Short")

    @staticmethod
    def INT() -> TypeInformation:
        return TypeInformation("Integer")

    @staticmethod
    def LONG() -> TypeInformation:
        return TypeInformation("Long")

    @staticmethod
    def FLOAT() -> TypeInformation:
        return TypeInformation("Float")

    @staticmethod
    def DOUBLE() -> TypeInformation:
        return TypeInformation("Double")

    @staticmethod
    def CHAR() -> TypeInformation:
        return TypeInformation("Character")

    @staticmethod
    def BIG_INT() -> TypeInformation:
        return TypeInformation("BigInteger")

    @staticmethod
    def BIG_DEC() -> TypeInformation:
        return TypeInformation("BigDecimal")

    @staticmethod
    def SQL_DATE() -> TypeInformation:
        return TypeInformation("Date")

    @staticmethod
    def SQL_TIME() -> TypeInformation:
        return TypeInformation("Time")

    @staticmethod
    def SQL_TIMESTAMP() -> TypeInformation:
        return TypeInformation("Timestamp")

    @staticmethod
    def INSTANT() -> TypeInformation:
        return TypeInformation("Instant")

    @staticmethod
    def PICKLED_BYTE_ARRAY() -> TypeInformation:
        return TypeInformation("PickledByteArray")

    @staticmethod
    def PRIMITIVE_ARRAY(element_type: TypeInformation) -> TypeInformation:
        return TypeInformation("PrimitiveArray", args=(element_type,))

    @staticmethod
    def BASIC_ARRAY(element_type: TypeInformation) -> TypeInformation:
        return TypeInformation("BasicArray", args=(element_type,))

    @staticmethod
    def OBJECT_ARRAY(element_type: TypeInformation) -> TypeInformation:
        return TypeInformation("ObjectArray", args=(element_type,))

    @staticmethod
    def LIST(element_type: TypeInformation) -> TypeInformation:
        return TypeInformation("List", args=(element_type,))

    @staticmethod
    def MAP(key_type: TypeInformation, value_type: TypeInformation) -> TypeInformation:
        return TypeInformation("Map", args=(key_type, value_type))

    @staticmethod
    def TUPLE(field_types: Sequence[TypeInformation]) -> TypeInformation:
        return TypeInformation(f"Tuple{len(field_types)}", field_types)

    @staticmethod
    def ROW(field_types: Sequence[TypeInformation]) -> TypeInformation:
        return TypeInformation("Row", field_types)

    @staticmethod
    def ROW_NAMED(field_names: Sequence[str],
                  field_types: Sequence[TypeInformation]) -> TypeInformation:
        if len(field_names) != len(field_types):
            raise ValueError(f"ROW_NAMED: {len(field_names)} names but {len(field_types)} "
                             "types")
        return TypeInformation("Row", field_types, field_names)


class RowKind:
    """The change a row stands for (used by the Table API's changelogs)."""

    INSERT = 0
    UPDATE_BEFORE = 1
    UPDATE_AFTER = 2
    DELETE = 3


class Row(tuple):  # type: ignore[type-arg]
    """A record with positional fields and, optionally, field names (``pyflink.common.Row``).

    ``Row(1, "a")`` has fields ``[0]`` and ``[1]``; ``Row(name="a", age=3)`` can also be
    read as ``row.name`` / ``row["name"]``; ``Person = Row("name", "age")`` makes a row
    class-like factory, ``Person("a", 3)``. A Row is a tuple: it compares, hashes and keys
    like the tuple of its values.
    """

    _fields: tuple[str, ...] | None
    _kind: int

    def __new__(cls, *args: Any, **kwargs: Any) -> Row:
        if args and kwargs:
            raise ValueError("Row() takes positional values or keyword fields, not both")
        if kwargs:
            row = super().__new__(cls, tuple(kwargs.values()))
            row._fields = tuple(kwargs)
        else:
            row = super().__new__(cls, args)
            row._fields = None
        row._kind = RowKind.INSERT
        return row

    @classmethod
    def _named(cls, names: Sequence[str], values: Iterable[Any]) -> Row:
        row = super().__new__(cls, tuple(values))
        row._fields = tuple(names)
        row._kind = RowKind.INSERT
        if len(row._fields) != len(row):
            raise ValueError(f"Row has {len(row._fields)} names but {len(row)} values")
        return row

    def __call__(self, *values: Any) -> Row:
        """A row of field names called with values makes a named row."""
        if not all(isinstance(n, str) for n in self):
            raise TypeError("only a Row of field names can be called to make a row")
        if len(values) != len(self):
            raise ValueError(f"expected {len(self)} values ({', '.join(self)}), "
                             f"got {len(values)}")
        return Row._named(tuple(self), values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_fields", "_kind"):
            raise AttributeError(name)
        fields = self._fields
        if fields is not None and name in fields:
            return tuple.__getitem__(self, fields.index(name))
        raise AttributeError(f"Row has no field {name!r}"
                             + (f" (fields: {', '.join(fields)})" if fields else ""))

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            fields = self._fields
            if fields is None or item not in fields:
                raise KeyError(item)
            return tuple.__getitem__(self, fields.index(item))
        return tuple.__getitem__(self, item)

    def __reduce__(self) -> Any:
        return (_make_row, (self._fields, tuple(self), self._kind))

    def get_fields_by_names(self, names: Sequence[str]) -> list[Any]:
        return [self[n] for n in names]

    def get_field_names(self) -> list[str] | None:
        return list(self._fields) if self._fields is not None else None

    def as_dict(self, recursive: bool = False) -> dict[str, Any]:
        if self._fields is None:
            raise TypeError("as_dict() needs a Row with field names")
        def conv(v: Any) -> Any:
            return v.as_dict(True) if recursive and isinstance(v, Row) and v._fields else v
        return {n: conv(v) for n, v in zip(self._fields, self, strict=True)}

    def get_row_kind(self) -> int:
        return self._kind

    def set_row_kind(self, kind: int) -> None:
        self._kind = kind

    def replace(self, index: int, value: Any) -> Row:
        """A copy with field ``index`` set to ``value`` (names kept)."""
        vals = list(self)
        vals[index] = value
        if self._fields is not None:
            return Row._named(self._fields, vals)
        return Row(*vals)

    def __repr__(self) -> str:
        if self._fields is not None:
            return "Row(" + ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self,
                                                                  strict=True)) + ")"
        return "Row(" + ", ".join(repr(v) for v in self) + ")"


def _make_row(fields: tuple[str, ...] | None, values: tuple[Any, ...], kind: int) -> Row:
    row = Row._named(fields, values) if fields is not None else Row(*values)
    row._kind = kind
    return row


def infer_type(value: Any) -> TypeInformation | None:
    """A best-effort description of ``value``'s type, for build-time checks of field
    references; ``None`` when nothing useful can be said."""
    if isinstance(value, bool):
        return Types.BOOLEAN()
    if isinstance(value, int):
        return Types.LONG()
    if isinstance(value, float):
        return Types.DOUBLE()
    if isinstance(value, str):
        return Types.STRING()
    if isinstance(value, Row):
        fields = [infer_type(v) or TypeInformation("Object") for v in value]
        if value._fields is not None:
            return Types.ROW_NAMED(list(value._fields), fields)
        return Types.ROW(fields)
    if isinstance(value, tuple):
        fields = [infer_type(v) or TypeInformation("Object") for v in value]
        names = getattr(type(value), "_fields", None)
        if names is not None:
            return TypeInformation(type(value).__name__, fields, list(names))
        return Types.TUPLE(fields)
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fs = dataclasses.fields(value)
        return TypeInformation(type(value).__name__,
                               [infer_type(getattr(value, f.name)) or TypeInformation("Object")
                                for f in fs], [f.name for f in fs])
    return None
