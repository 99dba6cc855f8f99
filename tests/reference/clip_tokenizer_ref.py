#!/usr/bin/python3
"""An independent Python implementation of CLIP's byte-level BPE tokenizer,
written from the facts in FORMATS.md, used as the reference for
tests/test_tokenizer.c.

usage: clip_tokenizer_ref.py VOCAB_JSON MERGES_TXT TEXTS OUT
       clip_tokenizer_ref.py --train CAPTIONS VOCAB_SIZE MIN_FREQ OUT_DIR

TEXTS is UTF-8, one text per line (split on "\\n" only, so other line
separators stay inside a text). OUT receives one line per text: the BPE ids
(no start/end tokens, no truncation) separated by single spaces.

Cleanup is the one CLIP does minus ftfy and HTML unescaping (which the C
implementation does not do either): whitespace runs to one space, strip,
lower-case with str.lower().

--train learns a vocabulary the slow, obvious way (every pair recounted at
every step) with the tie-breaking sl_tokenizer_train documents, and writes
vocab.json + merges.txt in the same layout, so the files can be compared
byte for byte.
"""
import json
import sys

import regex

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
EOW = "</w>"

PIECE = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
SPACES = regex.compile(r"\s+")


def byte_symbols():
    """Byte value -> one-character symbol. Printable Latin-1 bytes stand for
    themselves; the 68 others get U+0100, U+0101, ... in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table = {}
    shifted = 0x100
    for value in range(256):
        if value in keep:
            table[value] = chr(value)
        else:
            table[value] = chr(shifted)
            shifted += 1
    return table


def no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError("duplicate key %r in vocab.json" % key)
        seen[key] = value
    return seen


class Tokenizer:
    def __init__(self, vocab_path, merges_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = json.load(f, object_pairs_hook=no_duplicates)
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if not lines[0].startswith("#version"):
            raise ValueError("merges.txt: no #version line")
        self.rank = {}
        for line in lines[1:]:
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError("merges.txt: bad line %r" % line)
            pair = (parts[0], parts[1])
            if pair not in self.rank:
                self.rank[pair] = len(self.rank)
        self.sym = byte_symbols()

    def clean(self, text):
        return SPACES.sub(" ", text).strip().lower()

    def bpe(self, piece):
        symbols = [self.sym[b] for b in piece.encode("utf-8")]
        symbols[-1] += EOW
        while len(symbols) > 1:
            ranked = [
                (self.rank[p], p)
                for p in zip(symbols, symbols[1:])
                if p in self.rank
            ]
            if not ranked:
                break
            _, (left, right) = min(ranked)
            merged = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return [self.vocab[s] for s in symbols]

    def tokenize(self, text):
        ids = []
        for piece in PIECE.findall(self.clean(text)):
            if piece in (SOT, EOT):
                ids.append(self.vocab[piece])
            else:
                ids.extend(self.bpe(piece))
        return ids


def train(captions_path, vocab_size, min_freq, out_dir):
    """Plain BPE training, recounting every pair at every step: the most
    frequent pair wins, ties go to the smallest (left, right) texts; stop at
    vocab_size tokens (512 byte symbols + distinct merged texts + 2 special)
    or when the best pair occurs fewer than min_freq times. A merge whose
    text already is a token reuses it."""
    sym = byte_symbols()
    cleaner = Tokenizer.__new__(Tokenizer)
    with open(captions_path, "rb") as f:
        captions = f.read().decode("utf-8").split("\n")
    counts = {}
    for caption in captions:
        for piece in PIECE.findall(cleaner.clean(caption)):
            if piece in (SOT, EOT):
                continue
            counts[piece] = counts.get(piece, 0) + 1
    words = []
    for piece, n in counts.items():
        symbols = [sym[b] for b in piece.encode("utf-8")]
        symbols[-1] += EOW
        words.append([symbols, n])
    printable = [b for b in range(256) if sym[b] == chr(b)]
    order = printable + [b for b in range(256) if sym[b] != chr(b)]
    tokens = [sym[b] for b in order] + [sym[b] + EOW for b in order]
    known = set(tokens)
    merges = []
    while len(tokens) < vocab_size - 2:
        pairs = {}
        for symbols, n in words:
            for p in zip(symbols, symbols[1:]):
                pairs[p] = pairs.get(p, 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_freq:
            break
        left, right = best
        merges.append(best)
        if left + right not in known:
            known.add(left + right)
            tokens.append(left + right)
        for word in words:
            symbols = word[0]
            out = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    out.append(left + right)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            word[0] = out
    tokens += [SOT, EOT]
    with open(out_dir + "/vocab.json", "w", encoding="utf-8") as f:
        f.write(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False) + "\n")
    with open(out_dir + "/merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for left, right in merges:
            f.write(left + " " + right + "\n")


def main(argv):
    if len(argv) == 6 and argv[1] == "--train":
        train(argv[2], int(argv[3]), int(argv[4]), argv[5])
        return 0
    if len(argv) != 5:
        sys.stderr.write(__doc__)
        return 2
    tok = Tokenizer(argv[1], argv[2])
    with open(argv[3], "rb") as f:
        texts = f.read().decode("utf-8").split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    with open(argv[4], "w", encoding="ascii") as out:
        for text in texts:
            out.write(" ".join(str(i) for i in tok.tokenize(text)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
