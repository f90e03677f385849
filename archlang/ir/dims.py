"""Symbolic dimensions: polynomials over named sizes with rational coefficients.

Takes: integers and free size names (``B``, ``S``, ``img``). Produces: immutable
:class:`Dim` values closed under ``+ - *``, exact division by constants and floor / ceil
division by positive constants, which the shape checker uses for symbolic shapes and the
cost model turns into sympy expressions. A dimension that is a constant is always a plain
``int``: arithmetic normalises, so a shape is a tuple of ``int | Dim`` and never holds
``Dim`` constants. No sympy here: the checker must stay light.

The atoms of a monomial are free sizes (``str``) or :class:`Floor` values, ``floor(q / d)``
for a polynomial ``q`` with integer coefficients in ``[0, d)``: a strided convolution over a
free length ``T`` gives ``floor((T + 1)/4) - 1``, exact at every ``T``. Free sizes are whole
numbers, so every monomial is integer-valued, which the normal form of a floor relies on.
"""

from __future__ import annotations

from fractions import Fraction
from math import gcd
from typing import Union

from pydantic import BaseModel, ConfigDict

# sorted (atom, exponent) pairs, an atom being a free size or a Floor; () is the constant monomial
Power = tuple[tuple[Union[str, "Floor"], int], ...]

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
    powers: tuple[tuple[Union[str, Floor], int], ...] = ()  # noqa: UP007


class Floor(BaseModel):
    """The atom ``floor(arg / den)``: ``arg`` a polynomial with integer coefficients in
    ``[0, den)`` and no common factor with ``den`` (``den >= 2``), so that equal floors are
    equal values. Made by :func:`floordiv`; sorts after every free size."""

    model_config = ConfigDict(frozen=True)

    arg: Dim
    den: int

    def __str__(self) -> str:
        a = str(self.arg)
        return f"floor({a if len(self.arg.terms) == 1 else '(' + a + ')'}/{self.den})"

    def __repr__(self) -> str:
        return f"Floor({self})"

    def __hash__(self) -> int:
        return hash((self.arg, self.den))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Floor):
            return self.den == other.den and self.arg == other.arg
        return NotImplemented

    def _key(self) -> tuple:
        return (self.den, str(self.arg))

    # ordering among atoms: free sizes (str) first, then floors by (den, arg)
    def __lt__(self, other: object) -> bool:
        if isinstance(other, str):
            return False
        if isinstance(other, Floor):
            return self._key() < other._key()
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, str):
            return True
        if isinstance(other, Floor):
            return self._key() > other._key()
        return NotImplemented

    def __le__(self, other: object) -> bool:
        return self == other or self < other

    def __ge__(self, other: object) -> bool:
        return self == other or self > other

    def value(self, values: dict[str, int]) -> DimLike:
        """The floor with known sizes substituted: an ``int`` once its argument is known."""
        a = self.arg.subs(values)
        if isinstance(a, Dim):
            return floordiv(a, self.den) if a != self.arg else Dim._atom(self)
        return int(Fraction(a) // self.den)


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
        """The free sizes it depends on, also those inside a floor."""
        out: set[str] = set()
        for t in self.terms:
            for a, _ in t.powers:
                if isinstance(a, str):
                    out.add(a)
                else:
                    out |= a.arg.symbols
        return out

    @property
    def has_floor(self) -> bool:
        return any(not isinstance(a, str) for t in self.terms for a, _ in t.powers)

    @staticmethod
    def _atom(a: Floor) -> Dim:
        return Dim.model_construct(terms=(Term.model_construct(num=1, den=1, powers=((a, 1),)),))

    def __str__(self) -> str:
        out = ""
        for i, t in enumerate(sorted(self.terms, key=lambda t: (-sum(e for _, e in t.powers), t.powers))):
            c = Fraction(t.num, t.den)
            neg, c = c < 0, abs(c)
            mono = "*".join(str(s) if e == 1 else f"{s}^{e}" for s, e in t.powers)
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
        extra: DimLike = 0  # terms whose floors changed: their products, added at the end
        for t in self.terms:
            c = Fraction(t.num, t.den)
            rest = []
            parts: list[DimLike] = []
            for s, e in t.powers:
                if isinstance(s, str):
                    if s in values:
                        c *= Fraction(values[s]) ** e
                    else:
                        rest.append((s, e))
                    continue
                v = s.value(values)
                if isinstance(v, int):
                    c *= Fraction(v) ** e
                elif len(v.terms) == 1 and v.terms[0].powers == ((s, 1),):  # unchanged
                    rest.append((s, e))
                else:
                    parts.extend([v] * e)
            if parts:
                term: DimLike = Dim._from_map({tuple(rest): c})
                for v in parts:
                    term = mul(term, v)
                extra = add(extra, term)
                continue
            key = tuple(rest)
            acc[key] = acc.get(key, Fraction(0)) + c
        out = Dim._from_map(acc)
        return add(out, extra) if not (isinstance(extra, int) and extra == 0) else out

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


def _scale(d: Dim, c: Fraction) -> DimLike:
    """``c * d`` for a constant ``c``: the monomials stay, so only the coefficients change."""
    if c == 0:
        return 0
    if c == 1:
        return d
    terms = []
    for t in d.terms:
        q = Fraction(t.num * c.numerator, t.den * c.denominator)
        if q.numerator.bit_length() > MAX_COEFF_BITS or q.denominator.bit_length() > MAX_COEFF_BITS:
            raise DimTooLarge(f"a symbolic size with a coefficient beyond 2**{MAX_COEFF_BITS}")
        terms.append(Term.model_construct(num=q.numerator, den=q.denominator, powers=t.powers))
    return Dim.model_construct(terms=tuple(terms))


def mul(a: DimLike | Fraction, b: DimLike | Fraction) -> DimLike:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    # the hot case (an element count: a constant times a shape's one free size) keeps the monomials
    if isinstance(a, Dim) and not isinstance(b, Dim):
        return _scale(a, Fraction(b))
    if isinstance(b, Dim) and not isinstance(a, Dim):
        return _scale(b, Fraction(a))
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


def _lcm(a: int, b: int) -> int:
    return a * b // gcd(a, b)


def floordiv(a: DimLike, b: int) -> DimLike:
    """``floor(a / b)`` for a positive ``b``, exact at every value of the free sizes.

    An ``int`` gives an ``int``; a polynomial gives its integer part plus at most one
    :class:`Floor` atom in normal form: ``floor((T - 3)/4) = floor((T + 1)/4) - 1``,
    ``floor(2*T/2) = T``, and nested floors fold, ``floor((floor((T + 1)/2) - 4)/2) =
    floor((T + 1)/4) - 2``. Raises :class:`DimTooLarge` past the bounds of a size.
    """
    if b <= 0:
        raise ValueError(f"floor division by {b}: the divisor must be positive")
    if isinstance(a, int):
        return a // b
    m = _as_map(a)
    den = b
    for c in m.values():
        den = _lcm(den, (c / b).denominator)
    if den.bit_length() > MAX_COEFF_BITS:
        raise DimTooLarge(f"a symbolic size with a divisor beyond 2**{MAX_COEFF_BITS}")
    whole: dict[Power, Fraction] = {}
    rest: dict[Power, int] = {}
    for p, c in m.items():
        n = c * den / b  # an integer: den / b clears the denominators
        q, r = divmod(int(n), den)
        if q:
            whole[p] = Fraction(q)
        if r:
            rest[p] = r
    if not rest or list(rest) == [()]:  # the fractional part lies in [0, 1): nothing left
        return Dim._from_map(whole)
    g = den
    for r in rest.values():
        g = gcd(g, r)
    den //= g
    rest = {p: r // g for p, r in rest.items()}
    # floor((floor(x) + c)/d) = floor((x + c)/d) for whole c and d: fold a lone floor of coefficient 1
    atoms = [p for p in rest if p != ()]
    if len(atoms) == 1 and len(atoms[0]) == 1 and atoms[0][0][1] == 1 and rest[atoms[0]] == 1 \
            and isinstance(atoms[0][0][0], Floor):
        inner: Floor = atoms[0][0][0]
        folded = add(inner.arg, rest.get((), 0) * inner.den)
        return add(Dim._from_map(whole), floordiv(folded, inner.den * den))
    arg = Dim._from_map({p: Fraction(r) for p, r in rest.items()})
    assert isinstance(arg, Dim)
    return add(Dim._from_map(whole), Dim._atom(Floor.model_construct(arg=arg, den=den)))


def ceildiv(a: DimLike, b: int) -> DimLike:
    """``ceil(a / b)`` for a positive ``b``: ``floor((q + L - 1) / L)`` where ``a / b = q / L``
    with whole ``q`` (``ceil(T/4) = floor((T + 3)/4)``)."""
    if b <= 0:
        raise ValueError(f"ceil division by {b}: the divisor must be positive")
    if isinstance(a, int):
        return -(-a // b)
    den = b
    for c in _as_map(a).values():
        den = _lcm(den, (c / b).denominator)
    return floordiv(add(a, Fraction(b * (den - 1), den)), b)  # type: ignore[arg-type]


def fmt(d: DimLike) -> str:
    return str(d)


def fmt_shape(shape: tuple[DimLike, ...]) -> str:
    return "[" + ", ".join(fmt(d) for d in shape) + "]"


def product(dims: tuple[DimLike, ...] | list[DimLike]) -> DimLike:
    const = 1
    for d in dims:
        if isinstance(d, int):
            const *= d
    out: DimLike | None = None
    for d in dims:
        if not isinstance(d, int):
            out = d if out is None else mul(out, d)
    return const if out is None else mul(out, const)


Term.model_rebuild()
Floor.model_rebuild()
Dim.model_rebuild()
