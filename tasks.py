"""
The long-context tasks that eval_long.py scores and analyze_attention.py looks inside: haystacks
of held-out text (or passkey's filler), needles put at sentence boundaries, the questions, and the
scoring; and the plots that eval_long.py and reproduce.py both draw.
"""

import json
import math
import os
import re

import numpy as np

from corpus import (DATA, HELD_OUT_FORMAT, HELD_OUT_NAMES, KEY_WORDS, NEEDLE_FORMATS, get_tokenizer,
                    token_dtype)

# -----------------------------------------------------------------------------
# The task generators. Each takes (enc, haystacks, length, depth, rng) and returns the prompt tokens
# (exactly `length`), the reference strings, the (start, end) span of each needle, and how many new
# tokens to generate. A prompt is a haystack of filler with needles at sentence boundaries, then a
# question.

PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
                 "memorize them. I will quiz you about the important information there.\n")
PASSKEY_FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
                  "There and back again. ")
RULER_INTRO = ("Some special magic numbers are hidden within the following text. "
               "Make sure to memorize it. I will quiz you about the numbers afterwards.\n")
HELD_OUT_INTRO = ("Some important facts are hidden within the following text. Make sure to "
                  "memorize them. I will quiz you about them afterwards.\n")
NEEDLE, QUESTION = NEEDLE_FORMATS['magic_number']


class Haystack:
    """A long token array to cut haystacks from, and the indices just after each sentence end
    (where a needle can go without splitting a sentence)."""

    def __init__(self, enc, tokens):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        ends = np.array([enc.decode_single_token_bytes(t).rstrip().endswith((b'.', b'!', b'?'))
                         for t in range(enc.n_vocab)])
        self.bounds = np.flatnonzero(ends[self.tokens]) + 1

    def fill(self, n, rng):
        """n consecutive tokens from a random start, and the sentence boundaries within them."""
        start = int(rng.integers(0, len(self.tokens) - n + 1))
        b = self.bounds[(self.bounds > start) & (self.bounds < start + n)] - start
        return self.tokens[start:start + n], np.concatenate([[0], b, [n]])


def haystack_prompt(enc, hay, length, depths, needles, intro, question, rng):
    """Tokens (exactly `length`) of intro + filler with needles[i] at depth depths[i] + question.
    Returns the tokens and the (start, end) token span of each needle, in the order of `needles`."""
    pre, post = enc.encode_ordinary(intro), enc.encode_ordinary('\n' + question)
    needle_toks = [enc.encode_ordinary(' ' + n) for n in needles]
    n_fill = length - len(pre) - len(post) - sum(map(len, needle_toks))
    if n_fill < 16:
        raise ValueError(f"length {length} is too short for this task's needles and question")
    filler, bounds = hay.fill(n_fill, rng)
    # each needle at the sentence boundary nearest its depth
    cuts = [int(bounds[np.abs(bounds - d * n_fill).argmin()]) for d in depths]
    out, spans, at = [pre], {}, 0
    for i in sorted(range(len(cuts)), key=lambda i: cuts[i]):
        out.append(filler[at:cuts[i]])
        start = sum(map(len, out))
        out.append(needle_toks[i])
        spans[i] = (start, start + len(needle_toks[i]))
        at = cuts[i]
    out += [filler[at:], post]
    tokens = np.concatenate([np.asarray(o, dtype=np.int64) for o in out])
    return tokens, [spans[i] for i in range(len(cuts))]


def random_number(rng):
    return str(rng.integers(1000000, 10000000))


def random_keys(rng, n):
    """n distinct keys such as 'amber-river'."""
    pairs = rng.permutation(len(KEY_WORDS) ** 2)[:n]
    return [f"{KEY_WORDS[p // len(KEY_WORDS)]}-{KEY_WORDS[p % len(KEY_WORDS)]}" for p in pairs]


def task_passkey(enc, hays, length, depth, rng):
    value = str(rng.integers(10000, 100000))
    needle, question = NEEDLE_FORMATS['passkey']
    tokens, spans = haystack_prompt(enc, hays['grass'], length, [depth],
                                    [needle.format(value=value)], PASSKEY_INTRO,
                                    question, rng)
    return tokens, [value], spans, 8


def task_niah(enc, hays, length, depth, rng):
    key, value = random_keys(rng, 1)[0], random_number(rng)
    tokens, spans = haystack_prompt(enc, hays['text'], length, [depth],
                                    [NEEDLE.format(key=key, value=value)],
                                    RULER_INTRO, QUESTION.format(key=key), rng)
    return tokens, [value], spans, 8


def task_heldout(enc, hays, length, depth, rng):
    """niah in a format that training never uses (corpus.HELD_OUT_FORMAT: other words, and keys that
    are names): retrieval that generalises, told apart from a memorised template."""
    key, value = ' '.join(rng.choice(HELD_OUT_NAMES, 2,
                                     replace=False)), str(rng.integers(100000, 1000000))
    needle, question = (t.format(key=key, value=value) for t in HELD_OUT_FORMAT)
    tokens, spans = haystack_prompt(enc, hays['text'], length, [depth], [needle], HELD_OUT_INTRO,
                                    question, rng)
    return tokens, [value], spans, 8


def binding_prompt(enc, hays, length, k, rng):
    """k needles in the held-out format, one wording, with distinct held-out keys (two names each,
    which two keys may share) and distinct values, at random depths of held-out text, and a question
    for the first, so that only its key tells it from the others. Returns the tokens, the values
    (the asked one first), the needles' spans (the asked one's first) and the question."""
    keys = []
    while len(keys) < k:
        key = ' '.join(rng.choice(HELD_OUT_NAMES, 2, replace=False))
        keys += [key] if key not in keys else []
    values = [str(v) for v in rng.choice(900000, k, replace=False) + 100000]
    needles = [HELD_OUT_FORMAT[0].format(key=key, value=v) for key, v in zip(keys, values)]
    question = HELD_OUT_FORMAT[1].format(key=keys[0])
    tokens, spans = haystack_prompt(enc, hays['text'], length, rng.random(k), needles,
                                    HELD_OUT_INTRO, question, rng)
    return tokens, values, spans, question


def binding_outcome(output, values):
    """'asked' when the output's first number is the asked needle's value (values[0]), 'other' when
    it is another needle's (the key was not matched, the wording was), else 'none'."""
    found = re.findall(r'\d+', output)
    if not found or found[0] not in values:
        return 'none'
    return 'asked' if found[0] == values[0] else 'other'


def task_single(enc, hays, length, depth, rng):
    return task_niah(enc, hays, length, rng.random(), rng)


def task_multikey(enc, hays, length, depth, rng):
    """One needle asked for, three more with other keys as distractors."""
    keys, values = random_keys(rng, 4), [random_number(rng) for _ in range(4)]
    needles = [NEEDLE.format(key=k, value=v) for k, v in zip(keys, values)]
    tokens, spans = haystack_prompt(enc, hays['text'], length, rng.random(4), needles, RULER_INTRO,
                                    QUESTION.format(key=keys[0]), rng)
    return tokens, [values[0]], spans, 8


def task_multivalue(enc, hays, length, depth, rng):
    """Four needles with the same key; all four values asked for."""
    key, values = random_keys(rng, 1)[0], [random_number(rng) for _ in range(4)]
    needles = [NEEDLE.format(key=key, value=v) for v in values]
    question = (f"What are all the special magic numbers for {key} mentioned in the provided text? "
                f"The special magic numbers for {key} mentioned in the provided text are")
    tokens, spans = haystack_prompt(enc, hays['text'], length, rng.random(4), needles, RULER_INTRO,
                                    question, rng)
    return tokens, values, spans, 40


def task_multiquery(enc, hays, length, depth, rng):
    """Four needles with different keys; all four asked for in one question."""
    keys, values = random_keys(rng, 4), [random_number(rng) for _ in range(4)]
    needles = [NEEDLE.format(key=k, value=v) for k, v in zip(keys, values)]
    named = f"{', '.join(keys[:-1])} and {keys[-1]}"
    question = (f"What are all the special magic numbers for {named} mentioned in the provided "
                f"text? The special magic numbers for {named} mentioned in the provided text are")
    tokens, spans = haystack_prompt(enc, hays['text'], length, rng.random(4), needles, RULER_INTRO,
                                    question, rng)
    return tokens, values, spans, 40


def task_vt(enc, hays, length, depth, rng):
    """Variable tracking: VAR A = 12345, then a chain VAR B = VAR A, VAR C = VAR B, ... in order;
    name every variable that holds the value."""
    names = [''.join(rng.choice(list('ABCDEFGHIJKLMNOPQRSTUVWXYZ'), 5)) for _ in range(5)]
    value = str(rng.integers(10000, 100000))
    needles = ([f"VAR {names[0]} = {value}."]
               + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])])
    question = (f"Find all variables that are assigned the value {value} in the text above. "
                f"According to the chain of variable assignment in the text above, {len(names)} "
                f"variables are assigned the value {value}, they are:")
    intro = "Memorize and track the chain of variable assignment hidden in the following text.\n"
    tokens, spans = haystack_prompt(enc, hays['grass'], length, np.sort(rng.random(len(names))),
                                    needles, intro, question, rng)
    return tokens, names, spans, 30


def task_cwe(enc, hays, length, depth, rng):
    """Common-words extraction: a numbered list in which ten common words each appear ten times as
    often as any of twenty rare ones; name the ten most common."""
    words = list(rng.permutation(WORD_POOL))
    common, rare = words[:10], words[10:]
    intro = enc.encode_ordinary("Below is a numbered list of words. In these words, some appear "
                                "more often than others. Memorize the ones that appear most "
                                "often.\n")
    question = enc.encode_ordinary("\nWhat are the 10 most common words in the above list? "
                                   "Answer: The top 10 words that appear most often in the list "
                                   "are:")
    budget = length - len(intro) - len(question)
    listing, n = [], 0
    while True:  # rounds of the ten common words and two rare ones, shuffled, until the budget is
                 # spent
        items = [enc.encode_ordinary(f" {n + i + 1}. {w}")
                 for i, w in enumerate(rng.permutation(common + rare[:2]))]
        rare = rare[2:] + rare[:2]
        if len(listing) + sum(map(len, items)) > budget:
            break
        listing += [t for item in items for t in item]
        n += len(items)
    if n == 0:
        raise ValueError(f"length {length} is too short for the common-words task")
    pad = enc.encode_ordinary('\n') * (budget - len(listing))  # whole rounds only; newlines make up
                                                               # the length
    return np.asarray(intro + listing + pad + question, dtype=np.int64), common, [], 40


WORD_POOL = ('apple', 'bridge', 'candle', 'desert', 'engine', 'forest', 'garden', 'hammer',
             'island', 'jacket',
             'kettle', 'ladder', 'marble', 'needle', 'orange', 'pencil', 'rabbit', 'saddle',
             'tiger', 'violin',
             'window', 'yellow', 'anchor', 'basket', 'cactus', 'dragon', 'feather', 'guitar',
             'helmet', 'lemon')
RULER_TASKS = dict(single=task_single, multikey=task_multikey, multivalue=task_multivalue,
                   multiquery=task_multiquery, vt=task_vt, cwe=task_cwe)


def score(output, refs, exact=False):
    """Fraction of the reference strings found in the output. exact: the output's first number
    must be the one reference."""
    if exact:
        found = re.findall(r'\d+', output)
        return float(bool(found) and found[0] == refs[0])
    return sum(r in output for r in refs) / len(refs)


def held_out_text(dataset, enc):
    """The validation split of a prepared dataset (whole held-out documents, concatenated) as int64
    tokens of enc: as stored, or the same text re-encoded where the dataset was tokenized otherwise
    (GPT-2's data/shakespeare, evaluated on an imported model with its own tokenizer: hub.py)."""
    meta = json.load(open(os.path.join(DATA, dataset, 'meta.json')))
    tokens = np.fromfile(os.path.join(DATA, dataset, 'val.bin'),
                         dtype=token_dtype(meta)).astype(np.int64)
    if meta['tokenizer'] == enc.name:
        return tokens
    text = get_tokenizer(meta['tokenizer']).decode(tokens.tolist())
    return np.array(enc.encode_ordinary(text), dtype=np.int64)


# -----------------------------------------------------------------------------
# Plots (matplotlib, an optional extra: the callers check common.have_matplotlib first)

def draw_heatmap(ax, table, title, xlabel='needle depth', vmin=0, vmax=1, cmap='RdYlGn',
                 fontsize=8):
    """A {length: {depth: score}} table as a heat map on the matplotlib axis ax, each cell
    labelled."""
    depths, lengths = list(next(iter(table.values()))), list(table)
    ax.imshow([[np.nan if table[L][d] is None else table[L][d] for d in depths] for L in lengths],
              vmin=vmin, vmax=vmax, cmap=cmap, aspect='auto')
    ax.set_xticks(range(len(depths)), [f"{float(d):g}" for d in depths], fontsize=fontsize)
    ax.set_yticks(range(len(lengths)), [f"{int(L):,}" for L in lengths], fontsize=fontsize)
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.set_ylabel('context length (tokens)', fontsize=fontsize)
    ax.set_title(title, fontsize=fontsize + 1)
    for i, L in enumerate(lengths):
        for j, d in enumerate(depths):
            ax.text(j, i, '-' if table[L][d] is None else f"{table[L][d]:.2f}"[:4], ha='center',
                    va='center',
                    fontsize=fontsize - 1)


def draw_ppl(ax, curves, block_size):
    """Loss by position on the matplotlib axis ax; curves: {label: buckets [[lo, hi, loss], ...]
    (the 'ppl' task's)}, each bucket drawn at its geometric centre."""
    for label, buckets in curves.items():
        ax.plot([math.sqrt(lo * hi) for lo, hi, _ in buckets], [v for _, _, v in buckets],
                marker='.', label=label)
    ax.axvline(block_size, color='gray', linestyle=':', label='training length')
    ax.set(xscale='log', xlabel='position in document (tokens)', ylabel='loss (nats/token)',
           title='loss by position')
    ax.legend(fontsize=7)


def draw_distance(ax, layers, title, prefix=''):
    """Mean attention per key against distance, one curve per layer kind, on the matplotlib axis ax.
    layers: analyze()'s per-layer results at one length."""
    for kind in sorted({l['kind'] for l in layers}):
        curves = [l['distance'] for l in layers if l['kind'] == kind]
        x = [math.sqrt(max(lo, 0.5) * hi) for lo, hi, _ in curves[0]]
        ax.plot(x, np.mean([[v for _, _, v in c] for c in curves], axis=0), marker='.',
                label=f"{prefix}'{kind}' layers")
    ax.set(xscale='log', yscale='log', xlabel='distance to key (tokens)',
           ylabel='mean attention per key', title=title)
    ax.legend(fontsize=6)


def results_file(temperature=None):
    """eval_long.json, or with a NoPE temperature (beta, floor) given at evaluation
    eval_long_temp<beta>_<floor>.json."""
    if temperature is None:
        return 'eval_long.json'
    return f"eval_long_temp{temperature[0]:g}_{temperature[1]}.json"
