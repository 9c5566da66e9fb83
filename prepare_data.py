"""
Prepare a dataset for train.py: tokenize with GPT-2's BPE (offline) and write
data/<name>/train.bin and val.bin (uint16 token ids) and meta.json.

    python prepare_data.py                              # the built-in corpus -> data/shakespeare/
    python prepare_data.py --input=notes/               # a folder of documents, each file one
    python prepare_data.py --input=books.jsonl          # one document per line, in its "text" field
    python prepare_data.py --input=novel.txt --name=novel
    python prepare_data.py --input='fineweb/*.parquet' --name=fineweb --num_proc=16
    python prepare_data.py --tokenizer=smollm3/ --name=shakespeare-smollm3   # a model's tokenizer

The input is a file, a folder (searched recursively) or a glob of .txt/.md files (one document
each), .jsonl or .jsonl.gz files (a document a line, its text in --text_field) and .parquet files
(a document a row; pip install pyarrow). Documents stay whole, each followed by <|endoftext|>, and
the split is by document, so val.bin holds whole long documents for long-context evaluation. (A
single-document input is split by position instead: its last val_fraction goes to val.) A
tokenizer of more than 65,536 tokens writes uint32. Worker processes tokenize; the corpus streams
through in bounded memory, so billions of tokens need only disk. The work is corpus.prepare.
"""

import os

from configurator import configure
from corpus import builtin_corpus, prepare, read_documents

input = ''            # '' = the built-in Shakespeare corpus; else a file, folder or glob
name = ''             # the dataset's name under data/; '' = 'shakespeare' or the input's base name
tokenizer = 'gpt2'    # 'gpt2' ships with the repo and works offline; or another tiktoken encoding,
                      # or an imported model's folder (its tokenizer.json), to fine-tune it:
                      # train.py --init_from
text_field = 'text'   # the field (column) holding the text in .jsonl(.gz) and .parquet
val_fraction: '(0, 1)' = 0.1
seed: '[0, inf)' = 1337
num_proc: '[0, inf)' = 0              # tokenizer processes; 0 = one per core
configure(globals())
if input:
    docs = read_documents(input, text_field)
    if not name:  # the file's or folder's: books.jsonl.gz -> books, fineweb/*.parquet -> fineweb
        path = os.path.dirname(input.split('*')[0]) if '*' in input else os.path.normpath(input)
        name = os.path.splitext(os.path.basename(path).removesuffix('.gz'))[0]
else:
    docs, name = builtin_corpus(), name or 'shakespeare'
prepare(docs, name, tokenizer, val_fraction, seed, num_proc)
