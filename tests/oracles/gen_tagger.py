#!/usr/bin/env python3
"""Oracle for amp-data's Brill tagger: textblob's own tokenizer and tagger outputs.

Usage: $AMP_PYTHON tests/oracles/gen_tagger.py <outdir>

Writes <outdir>/tags.json: a list of {"text", "sentences": [{"tokens", "brill", "textblob"}]} where
* tokens   = textblob._text.find_tokens(text) split on " " (pattern's tokenizer),
* brill    = textblob._text.find_tags(tokens, lexicon, morphology, context, entities) -- pattern's
             full Brill pipeline over textblob's en-*.txt files,
* textblob = textblob.en.parser.find_tags(tokens) -- what TextBlob(text).tags uses (lexicon and
             suffix rules only).
Texts: the hand-written sentences of crates/amp-data/tests/data/tagger_sentences.txt plus 1500
deterministic pseudo-random token sequences (seeded) that exercise unknown words, the lexical
(morphology) rules, the contextual rules and named entities.
"""
import json
import os
import random
import sys

from textblob import _text
from textblob.en import lexicon, parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hand_texts():
    path = os.path.join(ROOT, "crates", "amp-data", "tests", "data", "tagger_sentences.txt")
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]


def random_texts(n=1500, seed=20241126):
    rng = random.Random(seed)
    words = sorted(dict.keys(lexicon) if dict.__len__(lexicon) else list(lexicon.keys()))
    entities = []
    with open(lexicon.entities.path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(";;;"):
                parts = line.split()
                if parts[-1] in ("PERS", "LOC", "ORG"):
                    parts = parts[:-1]
                entities.append(" ".join(parts))
    suffixes = ["ing", "ly", "s", "ed", "al", "ous", "able", "ible", "tic", "ness", "ment", "ize",
                "ate", "ful", "less", "ish", "ive", "ient", "ic", "er", "est", "ward", "y", "tion"]
    prefixes = ["un", "re", "wa", "dis", "over", "pre", "non", "anti"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    texts = []
    for _ in range(n):
        toks = []
        for _ in range(rng.randint(4, 16)):
            r = rng.random()
            if r < 0.55:
                toks.append(rng.choice(words))
            elif r < 0.75:
                w = "".join(rng.choice(letters) for _ in range(rng.randint(3, 7)))
                if rng.random() < 0.3:
                    w = rng.choice(prefixes) + w
                w += rng.choice(suffixes)
                toks.append(w)
            elif r < 0.82:
                toks.append("".join(rng.choice(letters) for _ in range(rng.randint(3, 8))).capitalize())
            elif r < 0.88:
                toks.append(rng.choice(["3", "12.5", "1,000", "2-3", "10:30", "$5", "45%", "1999"]))
            elif r < 0.92:
                toks.append(rng.choice(entities))
            elif r < 0.95:
                a = "".join(rng.choice(letters) for _ in range(4))
                b = "".join(rng.choice(letters) for _ in range(5))
                toks.append(a + "-" + b)
            else:
                toks.append(rng.choice([",", "the", "a", "to", "would", "be", "very", "which", "he"]))
        texts.append(" ".join(toks) + rng.choice([".", "!", "?", ""]))
    return texts


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rows = []
    for text in hand_texts() + random_texts():
        sents = []
        for s in _text.find_tokens(text):
            tokens = s.split(" ")
            brill = _text.find_tags(
                list(tokens), lexicon=lexicon, morphology=lexicon.morphology,
                context=lexicon.context, entities=lexicon.entities,
                default=("NN", "NNP", "CD"), language="en")
            tb = parser.find_tags(list(tokens))
            sents.append({"tokens": tokens, "brill": [t for _, t in brill],
                          "textblob": [t for _, t in tb]})
        rows.append({"text": text, "sentences": sents})
    with open(os.path.join(out, "tags.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False)
    print(f"gen_tagger: {len(rows)} texts -> {out}/tags.json")


if __name__ == "__main__":
    main()
