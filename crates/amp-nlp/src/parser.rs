//! spaCy's `TransitionBasedParser.v2` with the arc-eager transition system (state_type
//! "parser", 8 state features, greedy decoding), then `nonproj.deprojectivize`.
//!
//! * Model (`spacy/ml/parser_model.pyx`): token vectors are projected by a Linear (96 -> 64);
//!   the lower layer (`PrecomputableAffine`, W (nF=8, nO=64, nP=2, nI=64)) is precomputed per
//!   token and feature slot; a state's hidden layer is the sum of its 8 feature tokens' slots
//!   (the learned `pad` row for a missing token) plus bias, max over the 2 pieces; the upper
//!   Linear gives one score per action. The best-scoring valid action is taken.
//! * Transitions and validity are those of `arc_eager.pyx`; the state and its feature tokens
//!   those of `_state.pxd` (`StateC`: stack, buffer with re-buffered tokens, unshiftable marks,
//!   per-head left/right arc lists whose last live entry is the nearest child).
use crate::error::{field_err, NlpError, Result};
use crate::layers::Linear;
use crate::msgpack::{self, ThincModel};
use std::collections::BTreeSet;
use std::path::Path;

/// Arc-eager move types, numbered as spaCy's `arc_eager.pyx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Move {
    Shift = 0,
    Reduce = 1,
    Left = 2,
    Right = 3,
    Break = 4,
}

impl Move {
    fn from_code(c: u64) -> Option<Move> {
        Some(match c {
            0 => Move::Shift,
            1 => Move::Reduce,
            2 => Move::Left,
            3 => Move::Right,
            4 => Move::Break,
            _ => return None,
        })
    }
}

/// One action: a move and its label ("" for SHIFT/REDUCE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub mv: Move,
    pub label: String,
}

const SUBTOK: &str = "subtok";

/// The action list in spaCy's order (`TransitionSystem.initialize_actions`): moves by number;
/// within a move, labels by descending (frequency, label); labels with negative frequency after
/// all others, in descending (frequency, label) order; duplicates dropped.
pub fn actions_from_labels(labels: &[(u64, Vec<(String, i64)>)]) -> Vec<Action> {
    let mut out: Vec<Action> = Vec::new();
    let add = |out: &mut Vec<Action>, mv: Move, label: &str| {
        if !out.iter().any(|a| a.mv == mv && a.label == label) {
            out.push(Action {
                mv,
                label: label.to_string(),
            });
        }
    };
    let mut by_move: Vec<&(u64, Vec<(String, i64)>)> = labels.iter().collect();
    // Python sorts the JSON's string keys; for single-digit move codes that is numeric order
    by_move.sort_by_key(|(m, _)| m.to_string());
    let mut added: Vec<(i64, String)> = Vec::new();
    let mut added_moves: Vec<(String, Vec<Move>)> = Vec::new();
    for (code, freqs) in by_move {
        let Some(mv) = Move::from_code(*code) else {
            continue;
        };
        let mut sorted: Vec<(i64, &str)> = freqs.iter().map(|(l, f)| (*f, l.as_str())).collect();
        sorted.sort();
        sorted.reverse();
        for (f, l) in sorted {
            if f < 0 {
                added.push((f, l.to_string()));
                match added_moves.iter_mut().find(|(k, _)| k == l) {
                    Some((_, v)) => v.push(mv),
                    None => added_moves.push((l.to_string(), vec![mv])),
                }
            } else {
                add(&mut out, mv, l);
            }
        }
    }
    added.sort();
    added.reverse();
    for (_, l) in added {
        if let Some((_, moves)) = added_moves.iter().find(|(k, _)| *k == l) {
            for &mv in moves {
                add(&mut out, mv, &l);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct Arc {
    head: i32,
    child: i32,
    label: u32,
}

/// The parse state (`StateC` of `_state.pxd`).
#[derive(Debug, Clone)]
pub struct State {
    length: i32,
    stack: Vec<i32>,
    rebuffer: Vec<i32>,
    b_i: i32,
    heads: Vec<i32>,
    left_arcs: Vec<Vec<Arc>>,
    right_arcs: Vec<Vec<Arc>>,
    unshiftable: Vec<bool>,
    sent_starts: BTreeSet<i32>,
}

impl State {
    /// The initial state for `n` tokens.
    pub fn new(n: usize) -> State {
        State {
            length: n as i32,
            stack: Vec::new(),
            rebuffer: Vec::new(),
            b_i: 0,
            heads: vec![-1; n],
            left_arcs: vec![Vec::new(); n],
            right_arcs: vec![Vec::new(); n],
            unshiftable: vec![false; n],
            sent_starts: BTreeSet::new(),
        }
    }

    /// i-th item from the top of the stack, or -1.
    pub fn s(&self, i: i32) -> i32 {
        if i < 0 || i as usize >= self.stack.len() {
            return -1;
        }
        self.stack[self.stack.len() - 1 - i as usize]
    }

    /// i-th item of the buffer (re-buffered tokens first), or -1.
    pub fn b(&self, i: i32) -> i32 {
        if i < 0 {
            return -1;
        }
        let r = self.rebuffer.len() as i32;
        if i < r {
            return self.rebuffer[(r - 1 - i) as usize];
        }
        let b_i = self.b_i + (i - r);
        if b_i >= self.length {
            -1
        } else {
            b_i
        }
    }

    fn nth_child(arcs: &[Vec<Arc>], head: i32, idx: i32) -> i32 {
        if idx < 1 || head < 0 || head as usize >= arcs.len() {
            return -1;
        }
        let mut k = 0;
        for a in arcs[head as usize].iter().rev() {
            if a.child != -1 {
                k += 1;
                if k == idx {
                    return a.child;
                }
            }
        }
        -1
    }

    /// idx-th nearest left child of `head` in arc order, or -1.
    pub fn l(&self, head: i32, idx: i32) -> i32 {
        Self::nth_child(&self.left_arcs, head, idx)
    }

    /// idx-th most recent right child of `head`, or -1.
    pub fn r(&self, head: i32, idx: i32) -> i32 {
        Self::nth_child(&self.right_arcs, head, idx)
    }

    /// The 8 feature tokens of state_type "parser": B0 B1 S0 S1 S2 L(B0) L(S0) R(S0).
    pub fn context(&self) -> [i32; 8] {
        [
            self.b(0),
            self.b(1),
            self.s(0),
            self.s(1),
            self.s(2),
            self.l(self.b(0), 1),
            self.l(self.s(0), 1),
            self.r(self.s(0), 1),
        ]
    }

    pub fn stack_depth(&self) -> i32 {
        self.stack.len() as i32
    }

    pub fn buffer_length(&self) -> i32 {
        (self.length - self.b_i) + self.rebuffer.len() as i32
    }

    pub fn is_final(&self) -> bool {
        self.stack_depth() <= 0 && self.buffer_length() == 0
    }

    fn is_sent_start(&self, w: i32) -> bool {
        w >= 0 && w < self.length && self.sent_starts.contains(&w)
    }

    /// Tokens never carry a preset sentence start here (no senter runs before the parser).
    fn cannot_sent_start(&self, _w: i32) -> bool {
        false
    }

    fn has_head(&self, c: i32) -> bool {
        self.heads[c as usize] >= 0
    }

    fn is_unshiftable(&self, w: i32) -> bool {
        w >= 0 && (w as usize) < self.unshiftable.len() && self.unshiftable[w as usize]
    }

    fn push(&mut self) {
        let b0 = if let Some(b) = self.rebuffer.pop() {
            b
        } else {
            self.b_i += 1;
            self.b_i - 1
        };
        self.stack.push(b0);
    }

    fn pop(&mut self) {
        self.stack.pop();
    }

    fn unshift(&mut self) {
        if let Some(s0) = self.stack.pop() {
            self.unshiftable[s0 as usize] = true;
            self.rebuffer.push(s0);
        }
    }

    fn del_arc(&mut self, h: i32, c: i32) {
        let arcs = if h > c {
            &mut self.left_arcs[h as usize]
        } else {
            &mut self.right_arcs[h as usize]
        };
        let Some(last) = arcs.last() else { return };
        if last.head == h && last.child == c {
            arcs.pop();
        } else {
            let n = arcs.len();
            for a in arcs[..n - 1].iter_mut() {
                if a.head == h && a.child == c {
                    *a = Arc {
                        head: -1,
                        child: -1,
                        label: 0,
                    };
                    break;
                }
            }
        }
    }

    fn add_arc(&mut self, head: i32, child: i32, label: u32) {
        if self.has_head(child) {
            self.del_arc(self.heads[child as usize], child);
        }
        let arc = Arc { head, child, label };
        if head > child {
            self.left_arcs[head as usize].push(arc);
        } else {
            self.right_arcs[head as usize].push(arc);
        }
        self.heads[child as usize] = head;
    }

    /// Whether a move (with its label) is valid (`arc_eager.pyx`'s `is_valid`s).
    pub fn is_valid(&self, mv: Move, label: &str) -> bool {
        let subtok_bad = label == SUBTOK && self.s(0) != self.b(0) - 1;
        match mv {
            Move::Shift => {
                if self.stack_depth() == 0 {
                    true
                } else if self.buffer_length() < 2 {
                    false
                } else {
                    !(self.is_sent_start(self.b(0)) || self.is_unshiftable(self.b(0)))
                }
            }
            Move::Reduce => {
                if self.stack_depth() == 0 {
                    false
                } else if self.buffer_length() == 0 {
                    true
                } else {
                    !(self.stack_depth() == 1 && self.cannot_sent_start(self.b(0)))
                }
            }
            Move::Left | Move::Right => {
                !(self.stack_depth() == 0
                    || self.buffer_length() == 0
                    || self.is_sent_start(self.b(0))
                    || subtok_bad)
            }
            Move::Break => {
                !(self.buffer_length() < 2
                    || self.b(1) != self.b(0) + 1
                    || self.is_sent_start(self.b(1))
                    || self.cannot_sent_start(self.b(1)))
            }
        }
    }

    /// Applies a move; `label` is the action's label index.
    pub fn apply(&mut self, mv: Move, label: u32) {
        match mv {
            Move::Shift => self.push(),
            Move::Reduce => {
                if self.has_head(self.s(0)) || self.stack_depth() == 1 {
                    self.pop();
                } else {
                    self.unshift();
                }
            }
            Move::Left => {
                let (b0, s0) = (self.b(0), self.s(0));
                self.add_arc(b0, s0, label);
                if (b0 as usize) < self.unshiftable.len() {
                    self.unshiftable[b0 as usize] = false;
                }
                self.pop();
            }
            Move::Right => {
                let (s0, b0) = (self.s(0), self.b(0));
                self.add_arc(s0, b0, label);
                self.push();
            }
            Move::Break => {
                let b1 = self.b(1);
                self.sent_starts.insert(b1);
            }
        }
    }

    /// `force_final`: clear the stack and the buffer.
    pub fn force_final(&mut self) {
        self.stack.clear();
        self.rebuffer.clear();
        self.b_i = self.length;
    }

    /// (head, label) per token from the live arcs; None for tokens without a head.
    pub fn arcs(&self) -> Vec<Option<(usize, u32)>> {
        let mut out = vec![None; self.length as usize];
        for a in self.left_arcs.iter().chain(&self.right_arcs).flatten() {
            if a.head != -1 && a.child != -1 {
                out[a.child as usize] = Some((a.head as usize, a.label));
            }
        }
        out
    }
}

/// The parser model and its actions.
#[derive(Debug, Clone)]
pub struct Parser {
    pub actions: Vec<Action>,
    /// action -> index into `labels`
    action_label: Vec<u32>,
    /// action -> whether its label is `subtok` (the one label [`State::is_valid`] looks at)
    action_subtok: Vec<bool>,
    pub labels: Vec<String>,
    proj: Linear,
    n_f: usize,
    n_h: usize,
    n_p: usize,
    /// lower W, (nF·nH·nP, nI) in the model, stored transposed: (nI, nF·nH·nP) row-major
    lower_wt: Vec<f32>,
    lower_b: Vec<f32>,
    lower_pad: Vec<f32>,
    upper: Linear,
}

/// One doc's parse: head index (itself for roots) and label per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    pub heads: Vec<usize>,
    pub deps: Vec<String>,
}

impl Parser {
    /// Reads `parser/model` and `parser/moves`.
    pub fn load(model: &Path, moves: &Path) -> Result<Self> {
        let mv = msgpack::read(moves)?;
        let json = msgpack::get(&mv, "moves")
            .and_then(msgpack::as_text)
            .ok_or_else(|| field_err(moves, "moves", "missing"))?;
        let parsed: serde_json::Value =
            serde_json::from_str(json).map_err(|e| NlpError::Decode {
                path: moves.to_path_buf(),
                format: "JSON (moves)",
                msg: e.to_string(),
            })?;
        let obj = parsed
            .as_object()
            .ok_or_else(|| field_err(moves, "moves", "not an object"))?;
        let mut labels_by_move = Vec::new();
        for (k, v) in obj {
            let code: u64 = k
                .parse()
                .map_err(|_| field_err(moves, format!("moves.{k}"), "move code is not a number"))?;
            if Move::from_code(code).is_none() {
                return Err(NlpError::Unsupported {
                    path: moves.to_path_buf(),
                    field: format!("moves.{k}"),
                    what: "move code (arc-eager has 0..=4)".into(),
                });
            }
            let freqs = v
                .as_object()
                .ok_or_else(|| field_err(moves, format!("moves.{k}"), "not an object"))?
                .iter()
                .map(|(l, f)| {
                    Ok((
                        l.clone(),
                        f.as_i64().ok_or_else(|| {
                            field_err(moves, format!("moves.{k}.{l}"), "not an integer")
                        })?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            labels_by_move.push((code, freqs));
        }
        let actions = actions_from_labels(&labels_by_move);
        let mut labels: Vec<String> = Vec::new();
        let action_label = actions
            .iter()
            .map(|a| match labels.iter().position(|l| *l == a.label) {
                Some(i) => i as u32,
                None => {
                    labels.push(a.label.clone());
                    (labels.len() - 1) as u32
                }
            })
            .collect();

        let m = ThincModel::read(model)?;
        let lower = m
            .named("precomputable_affine")
            .next()
            .ok_or_else(|| field_err(model, "precomputable_affine", "missing"))?;
        let w = lower
            .param("W")
            .ok_or_else(|| field_err(model, "precomputable_affine.W", "missing"))?;
        let (n_f, n_h, n_p, n_i) = match w.shape.as_slice() {
            &[f, h, p, i] => (f, h, p, i),
            _ => {
                return Err(field_err(
                    model,
                    "precomputable_affine.W",
                    "not 4-d (nF, nO, nP, nI)",
                ))
            }
        };
        if n_h == 0 || n_p == 0 || n_i == 0 {
            return Err(field_err(
                model,
                "precomputable_affine.W",
                "a zero dimension",
            ));
        }
        if actions.is_empty() {
            return Err(field_err(moves, "moves", "no actions"));
        }
        if n_f != 8 {
            return Err(NlpError::Unsupported {
                path: model.to_path_buf(),
                field: "precomputable_affine.W".into(),
                what: format!(
                    "{n_f} state features (state_type \"parser\" without extra tokens has 8)"
                ),
            });
        }
        let lower_b = m.param(lower, "b", &[n_h, n_p])?.data.clone();
        let lower_pad = m.param(lower, "pad", &[1, n_f, n_h, n_p])?.data.clone();
        let linears: Vec<_> = m.named("linear").collect();
        // walk order: the upper layer (nO = actions) comes before the tok2vec projection
        let upper_node = linears
            .iter()
            .find(|n| {
                n.param("W")
                    .is_some_and(|a| a.shape == [actions.len(), n_h])
            })
            .ok_or_else(|| {
                field_err(
                    model,
                    "linear",
                    format!(
                        "no upper layer of shape ({}, {n_h}) for the moves' {} actions",
                        actions.len(),
                        actions.len()
                    ),
                )
            })?;
        let upper = Linear::load(&m, upper_node, actions.len(), n_h)?;
        let proj_node = linears
            .iter()
            .find(|n| {
                n.param("W")
                    .is_some_and(|a| a.shape.len() == 2 && a.shape[0] == n_i && a.shape[1] != n_h)
            })
            .or_else(|| {
                linears.iter().find(|n| {
                    n.param("W").is_some_and(|a| a.shape == [n_i, n_i])
                        && !std::ptr::eq(**n, *upper_node)
                })
            })
            .ok_or_else(|| field_err(model, "linear", "no tok2vec projection layer"))?;
        let t2v_width = proj_node.param("W").unwrap().shape[1];
        let proj = Linear::load(&m, proj_node, n_i, t2v_width)?;
        let action_subtok = actions.iter().map(|a| a.label == SUBTOK).collect();
        Ok(Parser {
            actions,
            action_label,
            action_subtok,
            labels,
            proj,
            n_f,
            n_h,
            n_p,
            lower_wt: crate::layers::transpose(&w.data, n_f * n_h * n_p, n_i),
            lower_b,
            lower_pad,
            upper,
        })
    }

    /// Width of the token vectors the parser reads.
    pub fn input_width(&self) -> usize {
        self.proj.n_i
    }

    /// Scores of every action for a state (for tests and debugging).
    fn scores(
        &self,
        cache: &[f32],
        ctx: &[i32; 8],
        hidden: &mut [f32],
        unmaxed: &mut [f32],
        scores: &mut [f32],
    ) {
        let o = self.n_h * self.n_p;
        unmaxed.fill(0.0);
        for (f, &t) in ctx.iter().enumerate() {
            let feat = if t < 0 {
                &self.lower_pad[f * o..(f + 1) * o]
            } else {
                let base = (t as usize * self.n_f + f) * o;
                &cache[base..base + o]
            };
            for (u, v) in unmaxed.iter_mut().zip(feat) {
                *u += v;
            }
        }
        for (u, b) in unmaxed.iter_mut().zip(&self.lower_b) {
            *u += b;
        }
        for (h, piece) in hidden.iter_mut().zip(unmaxed.chunks_exact(self.n_p)) {
            let mut best = piece[0];
            for &v in &piece[1..] {
                if v > best {
                    best = v;
                }
            }
            *h = best;
        }
        crate::layers::affine_t(&self.upper.wt, &self.upper.b, hidden, scores);
    }

    /// Parses one doc from its token vectors; returns arcs before deprojectivization.
    pub fn parse(&self, tokvecs: &[Vec<f32>]) -> Parse {
        let x: Vec<f32> = tokvecs.iter().flatten().copied().collect();
        self.parse_rows(&x, &[tokvecs.len()])
            .pop()
            .expect("one doc in, one parse out")
    }

    /// Parses several docs whose token vectors are stored one after another in `x` (doc d has
    /// `lens[d]` rows): the precomputation's two GEMMs run over all their tokens at once (a row's
    /// result does not depend on the other rows), then each doc is decoded on its own.
    pub fn parse_rows(&self, x: &[f32], lens: &[usize]) -> Vec<Parse> {
        let rows: usize = lens.iter().sum();
        let o = self.n_h * self.n_p;
        let per_token = self.n_f * o;
        // precompute: cache[t][f][o] = W[f] . proj(x_t), two GEMMs over all tokens (lower W is
        // (nF·nO·nP, nI) row-major, so row t of the product is exactly cache[t])
        let px = crate::layers::affine_rows(&self.proj.wt, &self.proj.b, self.proj.n_o, x, rows);
        let zero = vec![0f32; per_token];
        let cache = crate::layers::affine_rows(&self.lower_wt, &zero, per_token, &px, rows);
        debug_assert_eq!(cache.len(), rows * per_token);
        let mut first = 0;
        lens.iter()
            .map(|&n| {
                let c = &cache[first * per_token..(first + n) * per_token];
                first += n;
                self.decode(c, n)
            })
            .collect()
    }

    /// Greedy arc-eager decoding of one doc of `n` tokens from its precomputed features.
    fn decode(&self, cache: &[f32], n: usize) -> Parse {
        let o = self.n_h * self.n_p;
        let mut st = State::new(n);
        let (mut hidden, mut unmaxed) = (vec![0f32; self.n_h], vec![0f32; o]);
        let mut scores = vec![0f32; self.actions.len()];
        let mut steps = 0;
        while !st.is_final() {
            steps += 1;
            if steps > 4 * n + 8 {
                st.force_final();
                break;
            }
            let ctx = st.context();
            self.scores(cache, &ctx, &mut hidden, &mut unmaxed, &mut scores);
            // validity depends on the label only through "is it `subtok`": ten checks per state
            // instead of one per action
            let moves = [
                Move::Shift,
                Move::Reduce,
                Move::Left,
                Move::Right,
                Move::Break,
            ];
            let valid = moves.map(|m| st.is_valid(m, ""));
            let valid_subtok = moves.map(|m| st.is_valid(m, SUBTOK));
            let mut best: Option<usize> = None;
            for (i, a) in self.actions.iter().enumerate() {
                let ok = if self.action_subtok[i] {
                    valid_subtok[a.mv as usize]
                } else {
                    valid[a.mv as usize]
                };
                if ok && best.is_none_or(|b| scores[i] > scores[b]) {
                    best = Some(i);
                }
            }
            match best {
                Some(i) => st.apply(self.actions[i].mv, self.action_label[i]),
                None => st.force_final(),
            }
        }
        let arcs = st.arcs();
        let mut heads = Vec::with_capacity(n);
        let mut deps = Vec::with_capacity(n);
        for (i, a) in arcs.into_iter().enumerate() {
            match a {
                Some((h, l)) if h != i => {
                    heads.push(h);
                    deps.push(self.labels[l as usize].clone());
                }
                _ => {
                    heads.push(i);
                    deps.push("ROOT".to_string());
                }
            }
        }
        Parse { heads, deps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_order_follows_initialize_actions() {
        let labels = vec![
            (
                3,
                vec![
                    ("pobj".to_string(), 5),
                    ("dep".to_string(), 0),
                    ("amod".to_string(), 5),
                ],
            ),
            (0, vec![("".to_string(), 9)]),
            (4, vec![("ROOT".to_string(), 0)]),
            (2, vec![("nsubj".to_string(), 3), ("x".to_string(), -1)]),
        ];
        let actions = actions_from_labels(&labels);
        let got: Vec<(Move, &str)> = actions.iter().map(|a| (a.mv, a.label.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Move::Shift, ""),
                (Move::Left, "nsubj"),
                (Move::Right, "pobj"),
                (Move::Right, "amod"),
                (Move::Right, "dep"),
                (Move::Break, "ROOT"),
                (Move::Left, "x"),
            ]
        );
    }

    #[test]
    fn validity_on_hand_made_states() {
        let mut st = State::new(3);
        // empty stack: only SHIFT (and BREAK needs a stack-independent B1 == B0 + 1)
        assert!(st.is_valid(Move::Shift, ""));
        assert!(!st.is_valid(Move::Reduce, ""));
        assert!(!st.is_valid(Move::Left, "det"));
        assert!(!st.is_valid(Move::Right, "det"));
        assert!(st.is_valid(Move::Break, "ROOT"));
        st.apply(Move::Shift, 0);
        assert_eq!((st.s(0), st.b(0), st.b(1)), (0, 1, 2));
        assert!(st.is_valid(Move::Left, "det") && st.is_valid(Move::Right, "det"));
        // S0 has no head and the stack is deeper than 1 after a shift: REDUCE unshifts it
        st.apply(Move::Shift, 0);
        st.apply(Move::Reduce, 0);
        assert_eq!((st.s(0), st.b(0)), (0, 1));
        assert!(
            !st.is_valid(Move::Shift, ""),
            "B0 was unshifted: not shiftable again"
        );
        // LEFT-arc from B0 makes B0 shiftable again and pops S0
        st.apply(Move::Left, 7);
        assert_eq!(st.stack_depth(), 0);
        assert_eq!(st.l(1, 1), 0);
        assert!(st.is_valid(Move::Shift, ""));
        st.apply(Move::Shift, 0);
        // one token left in the buffer: no BREAK
        assert!(!st.is_valid(Move::Break, "ROOT"));
        st.apply(Move::Right, 3);
        assert_eq!((st.s(0), st.s(1), st.b(0)), (2, 1, -1));
        assert_eq!(st.r(1, 1), 2);
        // buffer empty: only REDUCE
        assert!(!st.is_valid(Move::Shift, "") && !st.is_valid(Move::Right, "x"));
        assert!(st.is_valid(Move::Reduce, ""));
        st.apply(Move::Reduce, 0);
        st.apply(Move::Reduce, 0);
        assert!(st.is_final());
        assert_eq!(st.arcs(), vec![Some((1, 7)), None, Some((1, 3))]);
        // BREAK marks B1 as a sentence start: arcs into it and shifting it become invalid
        let mut st = State::new(3);
        st.apply(Move::Break, 0);
        assert!(
            !st.is_valid(Move::Break, "ROOT"),
            "B1 is already a sentence start"
        );
        st.apply(Move::Shift, 0);
        assert_eq!(st.b(0), 1);
        assert!(
            !st.is_valid(Move::Shift, "")
                && !st.is_valid(Move::Left, "x")
                && !st.is_valid(Move::Right, "x")
        );
        assert!(st.is_valid(Move::Reduce, ""));
        // subtok arcs need adjacent S0 and B0
        let mut st = State::new(3);
        st.apply(Move::Shift, 0);
        assert!(st.is_valid(Move::Left, SUBTOK));
        st.apply(Move::Shift, 0);
        st.apply(Move::Reduce, 0);
        st.apply(Move::Right, 0);
        st.apply(Move::Reduce, 0);
        assert_eq!(st.b(0), 2);
        assert_eq!(st.s(0), 0);
        assert!(!st.is_valid(Move::Right, SUBTOK));
    }
}
