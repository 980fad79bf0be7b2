//! Tree bookkeeping after parsing (`Doc.set_children_from_heads`, `nonproj.deprojectivize`),
//! spaCy's English `noun_chunks` rule (`spacy/lang/en/syntax_iterators.py`) and the "longest
//! noun chunk" of AMP §3.1.3 read on the parse (defined in `tests/oracles/gen_spacy.py`).
//!
//! Noun chunks matter because the auto-check compares a response's chunks with the standard
//! answer's (AMP §3.1.3): a chunk that swallows a verb matches nothing, so the chunker decides Acc.

/// Left and right subtree edges, as spaCy's `set_children_from_heads` computes them (up to 11
/// passes of min/max propagation, stopping when every head lies inside its sentence).
pub fn subtree_edges(heads: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let n = heads.len();
    let mut l: Vec<usize> = (0..n).collect();
    let mut r: Vec<usize> = (0..n).collect();
    if n == 0 {
        return (l, r);
    }
    let mut loop_count = 0;
    loop {
        for i in 0..n {
            let h = heads[i];
            if l[i] < l[h] {
                l[h] = l[i];
            }
            if r[i] > r[h] {
                r[h] = r[i];
            }
        }
        for i in (0..n).rev() {
            let h = heads[i];
            if r[i] > r[h] {
                r[h] = r[i];
            }
            if l[i] < l[h] {
                l[h] = l[i];
            }
        }
        let starts: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| heads[i] == i).map(|i| l[i]).collect();
        let mut ok = true;
        let mut cur_start = 0;
        'outer: for i in 0..n {
            if (i > 0 && starts.contains(&i)) || i == n - 1 {
                let cur_end = i;
                for &h in &heads[cur_start..cur_end] {
                    if h < cur_start || h > cur_end {
                        ok = false;
                        break 'outer;
                    }
                }
                cur_start = i;
            }
        }
        if ok || loop_count > 10 {
            break;
        }
        loop_count += 1;
    }
    (l, r)
}

/// Children of `h` as spaCy's `Token.children` sees them: tokens within h's (possibly stale)
/// subtree edges whose current head is h, in surface order.
fn children(h: usize, heads: &[usize], l: &[usize], r: &[usize]) -> Vec<usize> {
    (l[h]..=r[h]).filter(|&c| c != h && heads[c] == h).collect()
}

/// `nonproj.deprojectivize`: an arc labelled `X||Y` is re-attached to the first token labelled
/// `Y` found breadth-first below its head (left to right), and relabelled `X`.
pub fn deprojectivize(heads: &mut [usize], deps: &mut [String], is_space: &[bool]) {
    let (l, r) = subtree_edges(heads);
    for i in 0..heads.len() {
        let Some((new_label, head_label)) = deps[i]
            .split_once("||")
            .map(|(a, b)| (a.to_string(), b.to_string()))
        else {
            continue;
        };
        let mut new_head = heads[i];
        let mut queue = vec![heads[i]];
        'search: while !queue.is_empty() {
            let mut next = Vec::new();
            for &q in &queue {
                for c in children(q, heads, &l, &r) {
                    if is_space[c] || c == i {
                        continue;
                    }
                    if deps[c] == head_label {
                        new_head = c;
                        break 'search;
                    }
                    next.push(c);
                }
            }
            queue = next;
        }
        heads[i] = new_head;
        deps[i] = new_label;
    }
}

const NP_DEPS: &[&str] = &[
    "oprd",
    "nsubj",
    "dobj",
    "nsubjpass",
    "pcomp",
    "pobj",
    "dative",
    "appos",
    "attr",
    "ROOT",
];

/// spaCy's English `noun_chunks` over a parse: spans `[start, end)`.
pub fn noun_chunks(
    pos: &[String],
    deps: &[String],
    heads: &[usize],
    left_edge: &[usize],
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut prev_end: isize = -1;
    for i in 0..pos.len() {
        if !matches!(pos[i].as_str(), "NOUN" | "PROPN" | "PRON") {
            continue;
        }
        if left_edge[i] as isize <= prev_end {
            continue;
        }
        if NP_DEPS.contains(&deps[i].as_str()) {
            prev_end = i as isize;
            out.push((left_edge[i], i + 1));
        } else if deps[i] == "conj" {
            let mut head = heads[i];
            while deps[head] == "conj" && heads[head] < head {
                head = heads[head];
            }
            if NP_DEPS.contains(&deps[head].as_str()) {
                prev_end = i as isize;
                out.push((left_edge[i], i + 1));
            }
        }
    }
    out
}

/// `Span.root`: a sentence root inside the span, else the token with a head outside the span
/// that has the fewest steps to its root (the first on ties), else the first token.
pub fn span_root(heads: &[usize], s: usize, e: usize) -> usize {
    if let Some(i) = (s..e).find(|&i| heads[i] == i) {
        return i;
    }
    let mut best = heads.len();
    let mut root = None;
    for i in s..e {
        if (s..e).contains(&heads[i]) {
            continue;
        }
        let mut n = 0;
        let mut t = i;
        while heads[t] != t && n < heads.len() {
            t = heads[t];
            n += 1;
        }
        if n < best {
            best = n;
            root = Some(i);
        }
    }
    root.unwrap_or(s)
}

/// The longest noun chunks (gen_spacy.py's definition, by surface position): a noun chunk whose
/// root is a NOUN or PROPN, extended rightwards over every immediately following [ADP token +
/// noun chunk] pair, repeatedly; only spans not inside another such span are kept; sorted.
pub fn longest(chunks: &[(usize, usize)], pos: &[String], heads: &[usize]) -> Vec<(usize, usize)> {
    longest_where(chunks, pos, heads, |_| true)
}

/// [`longest`], starting only from noun chunks whose root token `keep` accepts (the auto-check's
/// stop-lists of "unnecessary" and "abstract" nouns); the chunks it extends over are not tested.
pub fn longest_where(
    chunks: &[(usize, usize)],
    pos: &[String],
    heads: &[usize],
    keep: impl Fn(usize) -> bool,
) -> Vec<(usize, usize)> {
    let by_start: std::collections::HashMap<usize, usize> = chunks.iter().copied().collect();
    let n = pos.len();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(s, e0) in chunks {
        let root = span_root(heads, s, e0);
        if !matches!(pos[root].as_str(), "NOUN" | "PROPN") || !keep(root) {
            continue;
        }
        let mut e = e0;
        while e < n && pos[e] == "ADP" {
            match by_start.get(&(e + 1)) {
                Some(&next) => e = next,
                None => break,
            }
        }
        out.push((s, e));
    }
    out.sort();
    out.dedup();
    out.iter()
        .copied()
        .filter(|&(s, e)| {
            !out.iter()
                .any(|&(c, d)| (c, d) != (s, e) && c <= s && e <= d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn chunks_on_a_hand_made_parse() {
        // "A dog sits on the mat near a door ." heads: A->dog, dog->sits, sits root, on->sits,
        // the->mat, mat->on, near->mat, a->door, door->near, .->sits
        let heads = vec![1, 2, 2, 2, 5, 3, 5, 8, 6, 2];
        let deps = s(&[
            "det", "nsubj", "ROOT", "prep", "det", "pobj", "prep", "det", "pobj", "punct",
        ]);
        let pos = s(&[
            "DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "ADP", "DET", "NOUN", "PUNCT",
        ]);
        let (l, r) = subtree_edges(&heads);
        assert_eq!((l[2], r[2]), (0, 9));
        assert_eq!((l[5], r[5]), (4, 8));
        let chunks = noun_chunks(&pos, &deps, &heads, &l);
        assert_eq!(chunks, vec![(0, 2), (4, 6), (7, 9)]);
        assert_eq!(longest(&chunks, &pos, &heads), vec![(0, 2), (4, 9)]);
    }

    #[test]
    fn deprojectivize_reattaches_lifted_arcs() {
        // token 3 labelled "amod||dobj" under root 0 moves to the dobj child (2)
        let mut heads = vec![0, 0, 0, 0];
        let mut deps = s(&["ROOT", "nsubj", "dobj", "amod||dobj"]);
        deprojectivize(&mut heads, &mut deps, &[false; 4]);
        assert_eq!(heads, vec![0, 0, 0, 2]);
        assert_eq!(deps[3], "amod");
    }
}
