"""Synthetic long-context retrieval tasks, generated locally: passkey retrieval and RULER-style NIAH.

Each prompt is ``preamble + context + "\\n" + query`` where the context is a haystack with one needle
inserted at a sentence boundary near ``depth`` (0 = start, 1 = end) of the context. Lengths are in tokens
of the caller's tokenizer: the haystack is filled so that ``count_tokens(prompt) <= length`` with as
many haystack sentences as fit. A probe that teacher-forces the answer (``teacher_forced=True``) gets
``count_tokens(teacher_forced_text(prompt, answer)) <= length`` instead: the sequence it feeds the
model, not only the prompt, stays within ``length`` (so its length bucket of the compiled GPU
attention does not depend on the sampled needle). A generating probe (niah) feeds the prompt alone,
which is what ``length`` bounds; its decoding steps grow it by the generated tokens. Haystacks:
``"repeat"`` (RULER's/Landmark's repeated filler) or ``"text"`` (a natural-text haystack cut from the
given documents, cycled when too short). Everything is seeded per (seed, task, haystack, length,
depth, sample), so the same seed gives the same samples on any machine.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NIAH_PREAMBLE = ("Some special magic numbers are hidden within the following text. Make sure to memorize "
                 "it. I will quiz you about the numbers afterwards.\n")
NIAH_NEEDLE = "One of the special magic numbers for {key} is: {value}."
NIAH_QUERY = ("What is the special magic number for {key} mentioned in the provided text? "
              "The special magic number for {key} mentioned in the provided text is")
PASSKEY_PREAMBLE = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
                    "them. I will quiz you about the important information there.\n")
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUERY = "What is the pass key? The pass key is"
_NIAH_KEY_COUNT = NIAH_NEEDLE.count("{key}") + NIAH_QUERY.count("{key}")  # key absent from the haystack
TASKS = ("niah", "passkey")
HAYSTACKS = ("repeat", "text")
_ADJ = ("abundant amber brave calm clever cosmic crimson curious dusty eager early fancy fierce gentle "
        "glossy golden hollow humble icy jolly lively lucky mellow misty noble odd plain proud quiet rapid "
        "rusty shiny silent silver sleepy smooth solid spicy steady stormy sunny swift tidy vivid "
        "wild").split()
_NOUN = ("anchor badger basket beacon candle canyon cactus comet cottage dragon engine falcon fiddle forest "
         "garden glacier hammer harbor island jacket kettle ladder lantern meadow mirror needle orchard "
         "otter parrot pepper pillow planet quartz river saddle shovel signal spoon teapot thunder tulip "
         "valley violin wagon walnut window yoga zebra").split()
_MAX_UNIT = 400  # characters; longer haystack sentences are cut so the fill stays fine-grained


def teacher_forced_text(prompt: str, answer: str) -> str:
    """The sequence a teacher-forcing probe feeds: the prompt, a space, the answer."""
    return prompt + " " + answer


@dataclass(frozen=True)
class Sample:
    """One prompt. Spans are character intervals [start, end) into ``prompt``.

    ``needle_span``: the answer value inside the needle (the first one for passkey, whose needle states
    the key twice); ``answer_spans``: every occurrence of the answer in the prompt (all inside the needle);
    ``needle_sentence_span``: the whole needle; ``context_span``: haystack plus needle.
    ``depth_actual``: characters of context before the needle / characters of context without the needle.
    """

    task: str
    length: int
    depth: float
    sample: int
    prompt: str
    answer: str
    key: str
    needle_span: tuple[int, int]
    answer_spans: tuple[tuple[int, int], ...]
    needle_sentence_span: tuple[int, int]
    context_span: tuple[int, int]
    depth_actual: float
    n_tokens: int


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """``count_tokens(str) -> int`` from a callable, or from an object with ``encode`` (HF tokenizers:
    without special tokens; results with ``.ids`` such as tokenizers' Encoding are supported)."""
    enc = getattr(tokenizer, "encode", None)
    if enc is None:
        if callable(tokenizer):
            return tokenizer
        raise TypeError("count_tokens: expected a callable str -> int or an object with .encode(str)")

    def count(text: str) -> int:
        try:
            out = enc(text, add_special_tokens=False)
        except TypeError:
            out = enc(text)
        return len(out.ids) if hasattr(out, "ids") else len(out)

    return count


def split_units(text: str) -> list[str]:
    """Cut text after each '.', '!', '?' or newline (and every _MAX_UNIT chars); "".join gives text back."""
    units = []
    for u in re.split(r"(?<=[.!?\n])", text):
        units.extend(u[i:i + _MAX_UNIT] for i in range(0, len(u), _MAX_UNIT))
    return [u for u in units if u]


class _Stream:
    """Haystack sentences from ``start`` on, cycling through ``units``."""

    def __init__(self, units: Sequence[str], start: int = 0):
        if not units or not "".join(units).strip():
            raise ValueError("docs: the text haystack needs at least one non-empty document")
        self.units, self.start = list(units), start
        m = len(self.units)
        # characters of the first i units taken, for i <= one cycle
        self._chars = list(itertools.accumulate((len(self.units[(start + i) % m]) for i in range(m)), initial=0))

    def take(self, n: int) -> list[str]:
        m = len(self.units)
        return [self.units[(self.start + i) % m] for i in range(n)]

    def chars(self, n: int) -> int:
        """Characters of ``take(n)``, without building it."""
        cycles, rest = divmod(n, len(self.units))
        return cycles * self._chars[-1] + self._chars[rest]

    def units_within(self, chars: float) -> int:
        """The largest n with ``chars(n) <= chars`` (0 if none)."""
        if chars <= 0:
            return 0
        cycles, rest = divmod(chars, self._chars[-1])
        return int(cycles) * len(self.units) + bisect.bisect_right(self._chars, rest) - 1


def _assemble(task: str, units: list[str], depth: float, key: str, value: str) -> dict:
    preamble, needle_t, query_t = ((NIAH_PREAMBLE, NIAH_NEEDLE, NIAH_QUERY) if task == "niah"
                                   else (PASSKEY_PREAMBLE, PASSKEY_NEEDLE, PASSKEY_QUERY))
    ends = list(itertools.accumulate(len(u) for u in units))
    target = depth * (ends[-1] if ends else 0)
    i = bisect.bisect_left(ends, target)  # unit boundary (after `cut` units) nearest to the target
    cut = min((c for c in (i, i + 1) if c <= len(units)),
              key=lambda c: abs((ends[c - 1] if c else 0) - target))
    before = "".join(units[:cut]).strip()
    after = "".join(units[cut:]).strip()
    before = before + " " if before else ""
    after = " " + after if after else ""
    if task == "niah":
        needle = needle_t.format(key=key, value=value)
        offsets = [len(f"One of the special magic numbers for {key} is: ")]
    else:
        needle = needle_t.format(key=value)
        offsets = [len("The pass key is "), len(f"The pass key is {value}. Remember it. ")]
    query = query_t.format(key=key)
    n0 = len(preamble) + len(before)
    prompt = preamble + before + needle + after + "\n" + query
    spans = tuple((n0 + o, n0 + o + len(value)) for o in offsets)
    ctx = len(before) + len(after)
    return {
        "prompt": prompt, "answer_spans": spans, "needle_sentence_span": (n0, n0 + len(needle)),
        "context_span": (len(preamble), len(preamble) + len(before) + len(needle) + len(after)),
        "depth_actual": len(before) / ctx if ctx else float(depth),
    }


def _fit(count: Callable[[str], int], build: Callable[[int], dict], length: int, hint: int | None,
         stream: _Stream | None = None, counted: str = "tokens") -> int:
    """Largest n (number of haystack units) with count(build(n)["prompt"]) <= length.

    ``hint`` (the answer for a neighbouring depth) is checked first: usually one or two counts suffice.
    Without one, ``stream`` gives a hint from characters (:func:`_guess`). Prompt tokens grow with n,
    so every start point finds the same n; the hint only saves tokenisations of the whole prompt.
    """
    def fits(n: int) -> bool:
        return count(build(n)["prompt"]) <= length

    if not fits(0):
        raise ValueError(f"length: {length} tokens is too short for the needle and query alone "
                         f"({count(build(0)['prompt'])} {counted})")
    if hint is None and stream is not None:
        hint = _guess(count, build, length, stream)
    lo, hi = 0, None  # invariant: fits(lo); hi is None or not fits(hi)
    if hint is not None and hint > 0:
        if fits(hint):
            lo = hint
        else:
            hi = hint
            for n in range(hint - 1, max(hint - 4, 0), -1):
                if fits(n):
                    return n  # n + 1 did not fit
                hi = n
    step = 1 if hint else 16
    while hi is None:  # grow until it no longer fits
        if fits(lo + step):
            lo, step = lo + step, step * 2
        else:
            hi = lo + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _guess(count: Callable[[str], int], build: Callable[[int], dict], length: int, stream: _Stream) -> int:
    """A fitting n at (or near) the largest, from a few tokenisations: prompt tokens grow about linearly
    with the haystack's characters, so each trial aims at the unit count whose characters give
    ``length`` tokens, interpolating between the largest fitting and the smallest overflowing trial
    (extrapolating at the last trial's characters per token, a little past ``length``, while no trial
    overflows). Returns the
    largest fitting trial (0 if none); ``_fit`` checks it, and the next n, exactly."""
    def point(n: int) -> tuple[int, int]:
        return stream.chars(n), count(build(n)["prompt"])

    c0 = count(build(0)["prompt"])
    lo, (x_lo, y_lo) = 0, (0, c0)
    hi = x_hi = y_hi = None
    per_token = len(build(0)["prompt"]) / max(c0, 1)
    for _ in range(6):
        if hi is None:  # aim a little past the budget, so that an overflowing trial comes early
            n = stream.units_within(x_lo + (length + 4 + length // 256 - y_lo) * per_token)
        else:
            if hi - lo <= 1:
                break
            n = stream.units_within(x_lo + (length - y_lo) * (x_hi - x_lo) / max(y_hi - y_lo, 1))
            n = min(max(n, lo + 1), hi - 1)
        if n <= lo or (hi is not None and n >= hi):
            break
        x, y = point(n)
        if y <= length:
            lo, x_lo, y_lo = n, x, y
        else:
            hi, x_hi, y_hi = n, x, y
        if y > c0:
            per_token = x / (y - c0)
    return lo


def _counted(count: Callable[[str], int]) -> Callable[[str], int]:
    """``count`` remembering its answers (one sample's fit counts some prompts twice)."""
    seen: dict[str, int] = {}

    def memo(text: str) -> int:
        if text not in seen:
            seen[text] = count(text)
        return seen[text]

    return memo


def _units_for(haystack: str, docs: Sequence[Any] | None) -> list[str]:
    if haystack == "repeat":
        return split_units(FILLER + " ")
    if haystack != "text":
        raise ValueError(f"haystack: {haystack!r} is not allowed; allowed: {', '.join(HAYSTACKS)}")
    if not docs:
        raise ValueError("docs: haystack 'text' needs a list of documents (strings or Doc)")
    texts = [d if isinstance(d, str) else d.text for d in docs]
    return split_units("\n\n".join(t.strip() for t in texts) + "\n\n")


def make_sample(task: str, count_tokens: Any, length: int, depth: float, sample: int = 0, seed: int = 0,
                haystack: str = "repeat", docs: Sequence[Any] | None = None,
                teacher_forced: bool = False, value: str | None = None, _units: list[str] | None = None,
                _hint: dict | None = None) -> Sample:
    """One passkey (``task="passkey"``) or NIAH (``task="niah"``) prompt of at most ``length`` tokens;
    with ``teacher_forced``, prompt plus answer (:func:`teacher_forced_text`) is at most ``length``
    tokens (``n_tokens`` stays the prompt's count). ``value``: the needle's value (the answer) instead
    of a random number; keys (and the haystack) are drawn as without it, and the haystack is fitted with
    this value in place (another value can tokenise to more tokens)."""
    if task not in TASKS:
        raise ValueError(f"task: {task!r} is not allowed; allowed: {', '.join(TASKS)}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length: must be a positive integer, got {length!r}")
    if not 0.0 <= float(depth) <= 1.0:
        raise ValueError(f"depth: must be in [0, 1], got {depth!r}")
    if value is not None and (not isinstance(value, str) or not value.strip() or value != value.strip()):
        raise ValueError(f"value: must be a non-empty string without surrounding whitespace, got {value!r}")
    count = _counted(token_counter(count_tokens))
    units = _units if _units is not None else _units_for(haystack, docs)
    h_rng = random.Random(f"haystack:{seed}:{task}:{haystack}:{length}:{sample}")
    stream = _Stream(units, h_rng.randrange(len(units)) if haystack == "text" else 0)
    rng = random.Random(f"needle:{seed}:{task}:{haystack}:{length}:{float(depth)!r}:{sample}")
    n_expected = 1 if task == "niah" else 2
    for _ in range(100):
        key = f"{rng.choice(_ADJ)}-{rng.choice(_NOUN)}"
        drawn = str(rng.randrange(1_000_000, 10_000_000) if task == "niah" else rng.randrange(10_000, 100_000))
        answer = drawn if value is None else value

        def build(n: int, key: str = key, answer: str = answer) -> dict:
            return _assemble(task, stream.take(n), float(depth), key, answer)

        def fitted(n: int, answer: str = answer) -> dict:  # the text whose tokens must fit
            return {"prompt": teacher_forced_text(build(n)["prompt"], answer)}

        hint = _hint.get((length, sample)) if _hint is not None else None
        if teacher_forced:
            n = _fit(count, fitted, length, hint, stream, "tokens with the answer")
        else:
            n = _fit(count, build, length, hint, stream)
        if _hint is not None:
            _hint[(length, sample)] = n
        out = build(n)
        prompt = out["prompt"]
        if prompt.count(answer) == n_expected and (task == "passkey" or prompt.count(key) == _NIAH_KEY_COUNT):
            break
    else:  # pragma: no cover - needs a haystack full of every candidate number
        raise ValueError("docs: could not place a needle whose answer is unique in this haystack")
    return Sample(task=task, length=length, depth=float(depth), sample=sample, prompt=prompt, answer=answer,
                  key=key if task == "niah" else answer, needle_span=out["answer_spans"][0],
                  answer_spans=out["answer_spans"], needle_sentence_span=out["needle_sentence_span"],
                  context_span=out["context_span"], depth_actual=out["depth_actual"],
                  n_tokens=count(prompt))


def make_grid(task: str, count_tokens: Any, lengths: Sequence[int], depths: Sequence[float],
              samples: int, seed: int = 0, haystack: str = "repeat",
              docs: Sequence[Any] | None = None, teacher_forced: bool = False) -> list[Sample]:
    """Samples over lengths x depths x range(samples), in that nesting order (lengths outermost);
    ``teacher_forced`` as in :func:`make_sample`."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: must be a positive integer, got {samples!r}")
    count = token_counter(count_tokens)
    units = _units_for(haystack, docs)
    hint: dict = {}  # fitted haystack size per (length, sample), reused across depths
    return [make_sample(task, count, length, depth, s, seed, haystack, None, teacher_forced, None, units, hint)
            for length in lengths for depth in depths for s in range(samples)]


def niah_grid(count_tokens: Any, lengths: Sequence[int], depths: Sequence[float], samples: int,
              seed: int = 0, haystack: str = "repeat", docs: Sequence[Any] | None = None) -> list[Sample]:
    """RULER-style single-needle NIAH samples over lengths x depths x samples."""
    return make_grid("niah", count_tokens, lengths, depths, samples, seed, haystack, docs)


def passkey_grid(count_tokens: Any, lengths: Sequence[int], depths: Sequence[float], samples: int,
                 seed: int = 0, haystack: str = "repeat", docs: Sequence[Any] | None = None) -> list[Sample]:
    """Passkey retrieval samples over lengths x depths x samples."""
    return make_grid("passkey", count_tokens, lengths, depths, samples, seed, haystack, docs)


def first_word(text: str) -> str:
    """The exact-match rule of the NIAH / passkey tasks: the first whitespace-separated word of a
    continuation, surrounding punctuation stripped (compared with ``Sample.answer``)."""
    m = re.match(r"\s*(\S+)", text)
    return m.group(1).strip(string.punctuation) if m else ""
