"""Symbolic dimensions: polynomials over named sizes with rational coefficients.

Takes: integers and free size names (``B``, ``S``, ``img``). Produces: immutable
:class:`Dim` values closed under ``+ - *`` and exact division by constants, which the
shape checker uses for symbolic shapes and the cost model turns into sympy expressions.
A dimension that is a constant is always a plain ``int``: arithmetic normalises, so a
shape is a tuple of ``int | Dim`` and never holds ``Dim`` constants. No sympy here: the
checker must stay light.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Union

from pydantic import BaseModel, ConfigDict

Power = tuple[tuple[str, int], ...]  # sorted (symbol, exponent) pairs; () is the constant monomial

# Hard bounds on one polynomial, so that arithmetic on sizes can never run away (``(B+1)**2**30``).
# The checker refuses far smaller sizes (a shape's dim has at most a few terms); these only
# guarantee that no caller hangs or fills the memory.
MAX_TERMS = 4096
MAX_DEGREE = 64
MAX_COEFF_BITS = 256


class DimTooLarge(ValueError):
    """A symbolic size grew beyond :data:`MAX_TERMS` terms, degree :data:`MAX_DEGREE` or
    coefficients of :data:`MAX_COEFF_BITS` bits."""


class Term(BaseModel):
    model_config = ConfigDict(frozen=True)

    num: int
    den: int = 1
    powers: Power = ()


class Dim(BaseModel):
    """A non-constant polynomial in free sizes, e.g. ``B``, ``img/4``, ``2*B*S``."""

    model_config = ConfigDict(frozen=True)

    terms: tuple[Term, ...]

    # -- construction
    @staticmethod
    def sym(name: str) -> Dim:
        return Dim(terms=(Term(num=1, powers=((name, 1),)),))

    @staticmethod
    def _from_map(m: dict[Power, Fraction]) -> DimLike:
        items = sorted((p, c) for p, c in m.items() if c != 0)
        if len(items) > MAX_TERMS:
            raise DimTooLarge(f"a symbolic size of {len(items)} terms (the limit is {MAX_TERMS})")
        for p, c in items:
            if sum(e for _, e in p) > MAX_DEGREE:
                raise DimTooLarge(f"a symbolic size of degree {sum(e for _, e in p)} (the limit is {MAX_DEGREE})")
            if c.numerator.bit_length() > MAX_COEFF_BITS or c.denominator.bit_length() > MAX_COEFF_BITS:
                raise DimTooLarge(f"a symbolic size with a coefficient beyond 2**{MAX_COEFF_BITS}")
        if not items:
            return 0
        if len(items) == 1 and items[0][0] == ():
            c = items[0][1]
            return int(c) if c.denominator == 1 else _FractionalConst(c)
        # model_construct: these values are built from validated parts, and this is the hot path
        return Dim.model_construct(terms=tuple(Term.model_construct(num=c.numerator, den=c.denominator, powers=p)
                                               for p, c in items))

    def _map(self) -> dict[Power, Fraction]:
        return {t.powers: Fraction(t.num, t.den) for t in self.terms}

    # -- inspection
    @property
    def degree(self) -> int:
        return max(sum(e for _, e in t.powers) for t in self.terms)

    @property
    def symbols(self) -> set[str]:
        return {s for t in self.terms for s, _ in t.powers}

    def __str__(self) -> str:
        out = ""
        for i, t in enumerate(sorted(self.terms, key=lambda t: (-sum(e for _, e in t.powers), t.powers))):
            c = Fraction(t.num, t.den)
            neg, c = c < 0, abs(c)
            mono = "*".join(s if e == 1 else f"{s}^{e}" for s, e in t.powers)
            if mono:
                body = (f"{c.numerator}*" if c.numerator != 1 else "") + mono
                body += f"/{c.denominator}" if c.denominator != 1 else ""
            else:
                body = str(c)
            out = (("-" if neg else "") + body) if i == 0 else out + (" - " if neg else " + ") + body
        return out

    def __repr__(self) -> str:
        return f"Dim({self})"

    def __hash__(self) -> int:
        return hash(self.terms)

    def subs(self, values: dict[str, int]) -> DimLike:
        """Substitute known sizes; the result is an ``int`` once every symbol is known."""
        acc: dict[Power, Fraction] = {}
        for t in self.terms:
            c = Fraction(t.num, t.den)
            rest = []
            for s, e in t.powers:
                if s in values:
                    c *= Fraction(values[s]) ** e
                else:
                    rest.append((s, e))
            key = tuple(rest)
            acc[key] = acc.get(key, Fraction(0)) + c
        return Dim._from_map(acc)

    # -- arithmetic (ints are accepted on either side)
    def __add__(self, other: DimLike) -> DimLike:
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other: DimLike) -> DimLike:
        return add(self, mul(other, -1))

    def __rsub__(self, other: DimLike) -> DimLike:
        return add(other, mul(self, -1))

    def __mul__(self, other: DimLike) -> DimLike:
        return mul(self, other)

    __rmul__ = __mul__

    def __neg__(self) -> DimLike:
        return mul(self, -1)


class _FractionalConst(Fraction):
    """A non-integral constant that arose from dividing sizes; never stored in a shape."""


DimLike = Union[int, Dim]  # noqa: UP007 - used at runtime in isinstance checks elsewhere


def _as_map(x: DimLike | Fraction) -> dict[Power, Fraction]:
    if isinstance(x, Dim):
        return x._map()
    return {(): Fraction(x)}


def _mono_mul(a: Power, b: Power) -> Power:
    acc: dict[str, int] = dict(a)
    for s, e in b:
        acc[s] = acc.get(s, 0) + e
    return tuple(sorted((s, e) for s, e in acc.items() if e != 0))


def add(a: DimLike, b: DimLike) -> DimLike:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    m = _as_map(a)
    for p, c in _as_map(b).items():
        m[p] = m.get(p, Fraction(0)) + c
    return Dim._from_map(m)


def mul(a: DimLike | Fraction, b: DimLike | Fraction) -> DimLike:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    ma, mb = _as_map(a), _as_map(b)
    if len(ma) * len(mb) > MAX_TERMS * 4:
        raise DimTooLarge(f"a product of symbolic sizes of {len(ma)} and {len(mb)} terms")
    m: dict[Power, Fraction] = {}
    for pa, ca in ma.items():
        for pb, cb in mb.items():
            p = _mono_mul(pa, pb)
            m[p] = m.get(p, Fraction(0)) + ca * cb
    return Dim._from_map(m)


def div_exact(a: DimLike, b: int) -> DimLike | None:
    """``a / b`` when it is exact; ``None`` when ``b`` does not divide ``a``.

    A symbolic ``a`` divides if every coefficient does (``2*B / 2 = B``); otherwise the
    quotient keeps a rational coefficient (``img / 4``), which is exact for every value of
    ``img`` that the checker accepts, so symbolic division always succeeds.
    """
    if b == 0:
        return None
    if isinstance(a, int):
        return a // b if a % b == 0 else None
    return mul(a, Fraction(1, b))  # type: ignore[return-value]


def fmt(d: DimLike) -> str:
    return str(d)


def fmt_shape(shape: tuple[DimLike, ...]) -> str:
    return "[" + ", ".join(fmt(d) for d in shape) + "]"


def product(dims: tuple[DimLike, ...] | list[DimLike]) -> DimLike:
    const = 1
    for d in dims:
        if isinstance(d, int):
            const *= d
    out: DimLike = const
    for d in dims:
        if not isinstance(d, int):
            out = mul(out, d)
    return out
