"""Tier 0: every pattern and keyword of every intent in ONE compiled ``regex`` alternation.

Each intent is a named group ``__iN``; guard rules (PII, prompt injection) are
groups ``__gN`` in the same pass. A query is scanned once whatever the number of
intents. Named sub-groups of user patterns become slots. When rules of two
different intents match, tier 0 does not decide.

Cost. The scan tries every branch at every start position, and inside one alternation ``regex``
loses the shortcuts it takes for a single pattern (such as looking for a required ``@`` first). A
branch that opens with an unbounded repetition therefore re-reads a whole run of the characters it
repeats from every position of that run: quadratic in the run's length. Every default guard opens
with an anchor that fails in one step inside such a run (a lookbehind, ``\\b``, or ``\\G`` with a
bounded repetition), and repeats possessively where a group is repeated, so the whole pass stays
linear (``tests/test_rules_linear.py``).

User patterns (intents' ``patterns``, custom guards) are capped in two ways:

* At build and load time, ``pattern_hazard`` refuses, with a ``ConfigError`` naming the pattern:
  a repeated group with a choice inside, an alternation or a repetition of variable length
  (``(a+)+``, ``(a|aa)*``, ``(\\w+\\s?){2,}``: where the choices overlap, backtracking is
  exponential), unless the group is atomic ``(?>...)`` or the inner repetition possessive
  (``a++``); and an unbounded repetition with no anchor and no literal character before it in the
  pattern or in one of its alternatives (``\\d+ dollars``, ``.*refund``, ``\\w.[a-z]+``: quadratic, as
  above), unless ``\\b``, ``^``, ``\\A`` or a lookbehind comes first. The check is syntactic and catches
  the common shapes, not every slow pattern (``x\\w+y`` repeats its own first letter and passes).
* At match time, when any user pattern is present, each scan runs under ``regex``'s ``timeout=``
  (``rules.match_timeout_ms``, 20 ms per text; the default guards need under 1 ms for 2,000
  characters). A scan that runs out does not fail the query: tier 0 decides nothing for that text,
  the guards alone are run again (under the same cap) so its PII and injection flags are kept, and
  the flag ``rules_timeout`` is added. Without user patterns (keywords only) there is no cap to pay
  for: the cap costs a few µs per scan, and the guards and the keyword trie are linear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import regex

from router.errors import ConfigError

_INTENT = "__i"
_GUARD = "__g"
# The flag of a text whose scan ran past ``match_timeout_s``: tier 0 did not decide it.
RULES_TIMEOUT = "rules_timeout"
# Per text; RulesConfig.match_timeout_ms carries it from the router config.
DEFAULT_MATCH_TIMEOUT_S = 0.02

# Guards mark a query; they never decide its intent. Card numbers are Luhn-checked after the match.
# Each opens with an anchor (a lookbehind, \b, or \G before a bounded repetition) so that it fails
# at once inside a long run of digits or word characters (see the module docstring). The possessive
# forms (?+, ++) give up nothing: what they refuse to give back ('-', ' ', '.', '@', word
# characters) could never let the rest match.
# The e-mail's \G branch keeps an address that starts right where another rule's match ended
# ("card-holder@x.com" after the keyword "card"), which the lookbehind alone would miss; bounded to
# an RFC 5321 local part (64), it costs at most 64 steps per match, so it stays linear.
DEFAULT_GUARDS: dict[str, str] = {
    "pii_card_number": r"(?<!\d)(?:\d[ -]?+){12,18}\d(?!\d)",
    "pii_email": r"(?:\G[\w.+-]{1,64}+|(?<![\w.+-])[\w.+-]++)@[\w-]++(?:\.[\w-]++)+",
    "prompt_injection": (
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier)\s+"
        r"(?:instructions|prompts?|rules)\b|\bsystem\s+prompt\b|\byou\s+are\s+now\s+(?:in\s+)?(?:dan|developer\s+mode)\b"
    ),
}


@dataclass(frozen=True)
class IntentRules:
    intent: str
    patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass
class RuleMatch:
    intent: str | None = None
    matched: list[str] = field(default_factory=list)
    slots: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


def _trie_regex(owner: dict[str, str]) -> str:
    root: dict[str, dict] = {}  # type: ignore[type-arg]
    for word, group in owner.items():
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = group  # type: ignore[assignment]

    def emit(node: dict) -> str:  # type: ignore[type-arg]
        parts = [regex.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if "" in node:
            parts.append(f"(?P<{node['']}>)")  # last, so the longer keyword is tried first
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"

    return emit(root)


# ---- pattern_hazard: a syntactic check of user patterns (see the module docstring) ----

_BRACES = regex.compile(r"\{(\d*)(,?)(\d*)\}")
_INLINE_FLAGS = regex.compile(r"\(\?([a-zA-Z0-9^-]*)\)")
# A recursion into the pattern or a group, or a back-reference by name: one atom.
_CALL = regex.compile(r"\(\?(?:R|[+-]?\d+|&\w+|P[>=]\w+)\)")
_GROUP_OPEN = regex.compile(r"\((?:\?(?:P?<\w+>|'\w+'|[a-zA-Z^-]*:|\||\([^)]*\)|>|=|!|<=|<!))?")
_NESTED = (
    "repeats {frag!r}, a group with a choice inside ('|' or a repetition of variable length): where the "
    "choices overlap, backtracking is exponential; make the group atomic ((?>...)) or the inner repetition "
    "possessive (a++, a*+)"
)
_LEADING = (
    "has the unbounded repetition {frag!r} with no anchor or literal character before it, so the scan retries "
    r"it from every position of a long run (quadratic); put \b, ^ or a lookbehind such as (?<!\w) first"
)


@dataclass
class _Frame:
    """One group (or the whole pattern) while ``pattern_hazard`` reads it."""

    start: int
    atomic: bool = False  # (?>...) or a lookaround: nothing inside is retried once it matched
    zero_width: bool = False  # a lookaround
    lead: bool = True  # its alternatives open the pattern: nothing consumed and no anchor before them
    at_lead: bool = True  # the current position opens the pattern
    open_end: bool = False  # one of its alternatives ended with the position still opening the pattern
    ambiguous: bool = False  # holds a variable repetition or a '|': can match one text in several ways


def _quantifier(p: str, i: int) -> tuple[int, int | None, bool, int] | None:
    """(min, max or None for unbounded, possessive, end) of a quantifier at ``i``, or None."""
    if i >= len(p):
        return None
    lo: int
    hi: int | None
    if p[i] in "*+?":
        lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[p[i]]
        end = i + 1
    else:
        m = _BRACES.match(p, i)
        if m is None or not (m[1] or m[3]):
            return None  # '{' that is not a quantifier is a literal
        lo = int(m[1] or 0)
        hi = (int(m[3]) if m[3] else None) if m[2] else lo
        end = m.end()
    possessive = end < len(p) and p[end] == "+"
    if end < len(p) and p[end] in "+?":
        end += 1
    return lo, hi, possessive, end


def _class_end(p: str, i: int) -> int:
    j = i + 1
    if p.startswith("^", j):
        j += 1
    if p.startswith("]", j):
        j += 1  # a ']' first is a literal
    while j < len(p):
        if p[j] == "\\":
            j += 2
        elif p.startswith("[:", j) and (k := p.find(":]", j + 2)) != -1:
            j = k + 2
        elif p[j] == "]":
            return j + 1
        else:
            j += 1
    return len(p)


def _escape_end(p: str, i: int) -> int:
    if i + 2 < len(p) and p[i + 1] in "pPNxuUgk" and p[i + 2] in "{<":
        k = p.find("}" if p[i + 2] == "{" else ">", i + 3)
        return len(p) if k == -1 else k + 1
    return min(i + 2, len(p))


def pattern_hazard(pattern: str) -> str | None:
    """Why ``pattern`` could make the tier-0 scan slower than linear in the text, or None.

    Refuses a repeated group with a choice inside (unless atomic or possessive), and an unbounded
    repetition with only character classes before it (no anchor, no literal character) in the
    pattern or one of its alternatives. A reading this parser cannot follow gives None: the
    match-time cap still applies.
    """
    p = pattern
    stack = [_Frame(0)]
    verbose = False
    i = 0

    def atom(start: int, end: int, inner: _Frame | None, is_class: bool = False) -> tuple[str | None, int]:
        """Account for one atom p[start:end] and the quantifier after it; (hazard, next position)."""
        f = stack[-1]
        # What may still open the pattern after this atom: a class (., \w, [a-z]) matches almost
        # anywhere, so only a literal character, an anchor or a lookbehind narrows where a match starts.
        if inner is None:
            keeps_lead = is_class
        elif inner.zero_width:
            keeps_lead = not p.startswith("(?<", inner.start)
        else:
            keeps_lead = inner.open_end
        j = end
        while verbose and j < len(p) and p[j].isspace():
            j += 1
        q = _quantifier(p, j)
        end = q[3] if q else end
        frag = p[start:end]
        ambiguous_inside = inner is not None and inner.ambiguous and not inner.atomic
        if q is not None:
            lo, hi, possessive, _ = q
            if ambiguous_inside and (hi is None or hi > 1) and not possessive:
                return _NESTED.format(frag=frag), end
            if f.at_lead and hi is None:
                return _LEADING.format(frag=frag), end
            if not possessive and (lo != hi or ambiguous_inside):
                f.ambiguous = True
            if lo > 0 and not keeps_lead:
                f.at_lead = False
        else:
            f.ambiguous = f.ambiguous or ambiguous_inside
            f.at_lead = f.at_lead and keeps_lead
        return None, end

    while i < len(p):
        c = p[i]
        f = stack[-1]
        if verbose and c.isspace():
            i += 1
            continue
        if verbose and c == "#":
            k = p.find("\n", i)
            i = len(p) if k == -1 else k + 1
            continue
        hazard: str | None = None
        if c == "|":
            f.ambiguous = True
            f.open_end = f.open_end or f.at_lead
            f.at_lead = f.lead
            i += 1
            continue
        if c == "(":
            if p.startswith("(?#", i):
                k = p.find(")", i)
                i = len(p) if k == -1 else k + 1
                continue
            if (m := _CALL.match(p, i)) is not None:
                hazard, i = atom(i, m.end(), None)
            elif (m := _INLINE_FLAGS.match(p, i)) is not None:
                verbose = verbose or "x" in m[1].split("-")[0]
                i = m.end()
                continue
            else:
                m = _GROUP_OPEN.match(p, i)
                head = m[0] if m else "("
                around = head in ("(?=", "(?!", "(?<=", "(?<!")
                stack.append(_Frame(i, atomic=around or head == "(?>", zero_width=around,
                                    lead=f.at_lead, at_lead=f.at_lead))
                i += len(head)
                continue
        elif c == ")":
            if len(stack) == 1:
                return None  # not a reading this parser follows; regex compiled it
            inner = stack.pop()
            inner.open_end = inner.open_end or inner.at_lead
            hazard, i = atom(inner.start, i + 1, inner)
        elif c == "[":
            hazard, i = atom(i, _class_end(p, i), None, is_class=True)
        elif c == "\\":
            end = _escape_end(p, i)
            kind = p[i + 1: i + 2]
            if kind in ("b", "A", "G", "m"):
                f.at_lead = False  # an anchor: fails at once inside a run
                i = end
                continue
            if kind in ("B", "Z", "z", "M"):
                i = end  # zero width, but no anchor inside a run
                continue
            hazard, i = atom(i, end, None, is_class=kind in ("w", "W", "d", "D", "s", "S", "p", "P", "X"))
        elif c == "^":
            f.at_lead = False
            i += 1
            continue
        elif c == "$":
            i += 1
            continue
        else:
            hazard, i = atom(i, i + 1, None, is_class=c == ".")
        if hazard is not None:
            return hazard
    return None


def _luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    total = 0
    for pos, digit in enumerate(reversed(digits)):
        if pos % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


class RuleSet:
    """The compiled tier-0 matcher."""

    def __init__(self, rules: Sequence[IntentRules], guards: dict[str, str] | None = None,
                 match_timeout_s: float = DEFAULT_MATCH_TIMEOUT_S) -> None:
        self.rules = [r for r in rules if r.patterns or r.keywords]
        self.guards = dict(DEFAULT_GUARDS if guards is None else guards)
        if not match_timeout_s > 0:
            raise ConfigError(f"match_timeout_s must be above 0 seconds, got {match_timeout_s!r}")
        self.match_timeout_s = match_timeout_s
        # The cap costs a few µs per scan, so it is set only where a user pattern could need it: the
        # shipped guards and the keyword trie (escaped literals) are linear by construction.
        self._timeout = match_timeout_s if (
            any(r.patterns for r in self.rules) or any(DEFAULT_GUARDS.get(n) != p for n, p in self.guards.items())
        ) else None
        # Checked here as well as in the intent file: rules also come from an index's rules.json and the API.
        for owner, patterns in [*((f"intent {r.intent!r}", r.patterns) for r in self.rules),
                                *((f"guard {name!r}", (p,)) for name, p in self.guards.items())]:
            for pattern in patterns:
                hazard = pattern_hazard(pattern)
                if hazard is not None:
                    raise ConfigError(f"{owner}: pattern {pattern!r} {hazard}")
        self._intent_of: dict[str, str] = {}
        self._guard_of: dict[str, str] = {}
        branches: list[str] = []
        keyword_owner: dict[str, str] = {}
        for n, rule in enumerate(self.rules):
            group = f"{_INTENT}{n}"
            self._intent_of[group] = rule.intent
            if rule.patterns:
                branches.append(f"(?P<{group}>" + "|".join(rule.patterns) + ")")
            for word in rule.keywords:
                key = word.lower()
                other = keyword_owner.setdefault(key, group)
                if other != group:
                    raise ConfigError(
                        f"keyword {word!r} is declared by intents {self._intent_of[other]!r} and {rule.intent!r}"
                    )
        if keyword_owner:
            # One trie over all keywords, each leaf closing with an empty group named after its
            # intent (the regex module allows repeated names): a query is tested char by char once
            # instead of against every keyword of every intent.
            branches.insert(0, r"\b" + _trie_regex(keyword_owner) + r"\b")
        guard_branches: list[str] = []
        for n, (name, pattern) in enumerate(self.guards.items()):
            group = f"{_GUARD}{n}"
            self._guard_of[group] = name
            guard_branches.append(f"(?P<{group}>{pattern})")
        branches.extend(guard_branches)
        self.source = "|".join(branches)
        try:
            self._pattern = regex.compile(self.source, regex.IGNORECASE) if branches else None
            # The guards alone, for a text whose full scan ran out of time (see ``match``).
            self._guards_only = regex.compile("|".join(guard_branches), regex.IGNORECASE) if guard_branches else None
        except regex.error as exc:
            raise ConfigError(f"rules do not compile together: {exc}") from exc
        # Group names a user pattern declared: these become slots.
        self._slot_names = [
            g for g in (self._pattern.groupindex if self._pattern else {})
            if not g.startswith((_INTENT, _GUARD))
        ]

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, text: str) -> RuleMatch:
        result = RuleMatch()
        if self._pattern is None:
            return result
        try:
            intents = self._scan(self._pattern, text, result)
        except TimeoutError:
            # A pattern backtracked past the cap. What was found so far cannot decide (a later rule
            # of another intent might have matched), so tier 0 stands aside; the guards still mark
            # the text, and the flag says why no rule matched.
            result = RuleMatch()
            if self._guards_only is not None:
                try:
                    self._scan(self._guards_only, text, result)
                except TimeoutError:
                    pass  # keep the guard flags found before this cap too
            result.flags.append(RULES_TIMEOUT)
            return result
        result.matched = intents
        if len(intents) == 1:
            result.intent = intents[0]
        else:
            result.slots = {}
        return result

    def _scan(self, pattern: regex.Pattern[str], text: str, result: RuleMatch) -> list[str]:
        """Fill ``result``'s slots and flags from one scan; the intents whose rules matched, in order."""
        intents: list[str] = []
        for m in pattern.finditer(text, timeout=self._timeout):
            group = m.lastgroup
            if group is None:
                continue
            if group in self._intent_of:
                name = self._intent_of[group]
                if name not in intents:
                    intents.append(name)
                for slot in self._slot_names:
                    value = m.group(slot)
                    if value is not None:
                        result.slots[slot] = value
            else:
                guard = self._guard_of[group]
                if guard == "pii_card_number" and not _luhn_ok(m.group()):
                    continue
                if guard not in result.flags:
                    result.flags.append(guard)
        return intents
