"""Token-level mutants of archlang specs, deterministic from a seed.

A spec is split into tokens (the grammar's terminals, plus whitespace and comments kept
verbatim so that joining the tokens gives the text back); a mutant applies one to three
edits. Most edits keep the program parseable (numbers replaced by edge values, names by other
names of the file, strings by other strings), so the checker, the cost model and the renderer
all see mutants, not only the parser.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r\n\f]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\n]*")
  | (?P<float>[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)
  | (?P<int>[0-9]+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|\.\.|//|==|!=|<=|>=|[-+*/%@<>=(){}\[\],:.])
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)

KEYWORDS = ("use", "arch", "block", "in", "out", "for", "if", "elif", "else", "then", "return", "require",
            "adapt", "on", "freeze", "unfreeze", "true", "false", "and", "or", "not")

INT_EDGES = ("0", "-1", "1", "2", "3", "7", "1000", "65536", str(2**31), str(2**63), str(10**40),
             "9" * 5000, "-0", "00")
FLOAT_EDGES = ("0.0", "-1.0", "0.5", "1.0", "1e308", "1e999", "1e-999", "-1e308", "2.5e-7", "100.0")
STRING_EDGES = ('""', '"*"', '"->"', '" -> "', '"b n d -> b d n"', '"b (h p) w c -> b h (p w c)"',
                '"b c h w -> b (h w) c"', '"((a)) -> a"', '"a a -> a"', '"gelu"', '"tanh"', '"none"',
                '"layers.*.attn.q"', '"linear:*"', '"**"', '"head"', '"x" ', '"\u00e9\u00e8\u4e2d"',
                '"' + "a" * 3000 + '"', '"\\"', '"#"', '"%s{}"')
OPERATORS = ("+", "-", "*", "/", "//", "%", "**", "@", "==", "!=", "<", ">=", "(", ")", "[", "]", "{", "}", ",",
             ":", ".", "..", "=", "not", "and", "or", "if", "then", "else", "-", "*")
ODD_CHARS = ("$", "'", "`", "\\", "\x00", "\u00e9", "\u200b", "\t", ";", "!", "?", "&", "|", "~", "^")


@dataclass
class Tok:
    kind: str
    text: str


def tokenize(text: str) -> list[Tok]:
    return [Tok(m.lastgroup or "other", m.group()) for m in TOKEN_RE.finditer(text)]


def join(toks: list[Tok]) -> str:
    return "".join(t.text for t in toks)


def significant(toks: list[Tok]) -> list[int]:
    return [i for i, t in enumerate(toks) if t.kind not in ("ws", "comment")]


class Mutator:
    """Mutants of one spec text; ``others`` are texts whose lines may be spliced in."""

    def __init__(self, text: str, others: list[str] | None = None) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.names = sorted({t.text for t in self.toks if t.kind == "name" and t.text not in KEYWORDS})
        self.strings = sorted({t.text for t in self.toks if t.kind == "string"})
        self.other_lines = [ln for o in (others or []) for ln in o.split("\n") if ln.strip()]
        self.edits: list[tuple[int, Callable[[random.Random, list[Tok]], list[Tok] | None]]] = [
            (10, self.int_edge), (6, self.int_tweak), (3, self.float_edge), (8, self.name_swap),
            (4, self.string_swap), (5, self.delete_token), (3, self.duplicate_token), (3, self.swap_tokens),
            (4, self.insert_operator), (2, self.keyword_swap), (3, self.splice_line), (3, self.delete_line),
            (2, self.duplicate_line), (1, self.swap_lines), (1, self.deep_nest), (1, self.truncate),
            (1, self.odd_char), (2, self.swap_args),
        ]
        self._weights = [w for w, _ in self.edits]

    def mutant(self, rng: random.Random) -> tuple[str, list[str]]:
        """A mutant and the names of the edits that made it."""
        toks = list(self.toks)
        n = rng.choices((1, 2, 3), (60, 28, 12))[0]
        done: list[str] = []
        for _ in range(n * 4):
            if len(done) >= n:
                break
            _, fn = rng.choices(self.edits, self._weights)[0]
            out = fn(rng, toks)
            if out is not None:
                toks = out
                done.append(fn.__name__)
        return join(toks), done

    # -- helpers
    @staticmethod
    def _pick(rng: random.Random, toks: list[Tok], kinds: tuple[str, ...]) -> int | None:
        idx = [i for i, t in enumerate(toks) if t.kind in kinds]
        return rng.choice(idx) if idx else None

    @staticmethod
    def _replace(toks: list[Tok], i: int, text: str, kind: str | None = None) -> list[Tok]:
        out = list(toks)
        out[i] = Tok(kind or toks[i].kind, text)
        return out

    # -- the edits
    def int_edge(self, rng, toks):
        i = self._pick(rng, toks, ("int",))
        return None if i is None else self._replace(toks, i, rng.choice(INT_EDGES))

    def int_tweak(self, rng, toks):
        i = self._pick(rng, toks, ("int",))
        if i is None or len(toks[i].text) > 40:
            return None
        v = int(toks[i].text)
        return self._replace(toks, i, str(max(rng.choice((v + 1, v - 1, v * 2, v // 2, v * 3, v + 7)), 0)))

    def float_edge(self, rng, toks):
        i = self._pick(rng, toks, ("float", "int"))
        return None if i is None else self._replace(toks, i, rng.choice(FLOAT_EDGES), "float")

    def name_swap(self, rng, toks):
        i = self._pick(rng, toks, ("name",))
        if i is None:
            return None
        pool = self.names if rng.random() < 0.85 or not self.names else list(KEYWORDS)
        return self._replace(toks, i, rng.choice(pool or list(KEYWORDS)))

    def string_swap(self, rng, toks):
        i = self._pick(rng, toks, ("string",))
        if i is None:
            return None
        pool = self.strings if self.strings and rng.random() < 0.5 else list(STRING_EDGES)
        return self._replace(toks, i, rng.choice(pool))

    def delete_token(self, rng, toks):
        sig = significant(toks)
        if not sig:
            return None
        i = rng.choice(sig)
        return toks[:i] + toks[i + 1:]

    def duplicate_token(self, rng, toks):
        sig = significant(toks)
        if not sig:
            return None
        i = rng.choice(sig)
        return [*toks[:i + 1], Tok("ws", " "), toks[i], *toks[i + 1:]]

    def swap_tokens(self, rng, toks):
        sig = significant(toks)
        if len(sig) < 2:
            return None
        k = rng.randrange(len(sig) - 1)
        a, b = sig[k], sig[min(len(sig) - 1, k + rng.choice((1, 1, 1, 2, 3)))]
        out = list(toks)
        out[a], out[b] = toks[b], toks[a]
        return out

    def insert_operator(self, rng, toks):
        sig = significant(toks)
        if not sig:
            return None
        i = rng.choice(sig)
        op = rng.choice(OPERATORS)
        if rng.random() < 0.3:
            op = f"{op} {rng.choice(self.names or ['x'])}"
        return [*toks[:i], Tok("op", op), Tok("ws", " "), *toks[i:]]

    def keyword_swap(self, rng, toks):
        idx = [i for i, t in enumerate(toks) if t.kind == "name" and t.text in KEYWORDS]
        if not idx:
            return None
        return self._replace(toks, rng.choice(idx), rng.choice(KEYWORDS))

    def swap_args(self, rng, toks):
        """Replace a name by a literal (or the reverse): type errors in arguments."""
        i = self._pick(rng, toks, ("name", "int", "float", "string"))
        if i is None:
            return None
        return self._replace(toks, i, rng.choice(("true", "false", "[1, 2]", "[]", '"x"', "1.5", "0", "[[1]]",
                                                  "x.shape", "x.shape[9]", "(1 / 0)", "(0 // 0)", "(1 % 0)",
                                                  "(2 ** 70)", "(-7 ** 0.5)", "[1 .. 3]", "len(1)")), "name")

    # -- line edits
    @staticmethod
    def _lines(toks: list[Tok]) -> list[str]:
        return join(toks).split("\n")

    @staticmethod
    def _relex(lines: list[str]) -> list[Tok]:
        return tokenize("\n".join(lines))

    def splice_line(self, rng, toks):
        if not self.other_lines:
            return None
        lines = self._lines(toks)
        k = rng.randrange(len(lines) + 1)
        new = rng.choice(self.other_lines)
        if rng.random() < 0.5 and k < len(lines):
            lines[k] = new
        else:
            lines.insert(k, new)
        return self._relex(lines)

    def delete_line(self, rng, toks):
        lines = self._lines(toks)
        if len(lines) < 2:
            return None
        del lines[rng.randrange(len(lines))]
        return self._relex(lines)

    def duplicate_line(self, rng, toks):
        lines = self._lines(toks)
        k = rng.randrange(len(lines))
        lines.insert(k, lines[k])
        return self._relex(lines)

    def swap_lines(self, rng, toks):
        lines = self._lines(toks)
        if len(lines) < 2:
            return None
        a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[a], lines[b] = lines[b], lines[a]
        return self._relex(lines)

    def deep_nest(self, rng, toks):
        """Wrap an atom in many brackets (recursion limits in parser and elaborator)."""
        i = self._pick(rng, toks, ("int", "name", "float"))
        if i is None:
            return None
        n = rng.choice((30, 200, 1200, 5000))
        o, c = rng.choice((("(", ")"), ("[", "]"), ("-", ""), ("not ", ""), ("(1 + ", ")")))
        return self._replace(toks, i, o * n + toks[i].text + c * n, "other")

    def truncate(self, rng, toks):
        text = join(toks)
        if len(text) < 2:
            return None
        return tokenize(text[:rng.randrange(1, len(text))])

    def odd_char(self, rng, toks):
        sig = significant(toks)
        if not sig:
            return None
        i = rng.choice(sig)
        return [*toks[:i], Tok("other", rng.choice(ODD_CHARS)), *toks[i:]]
