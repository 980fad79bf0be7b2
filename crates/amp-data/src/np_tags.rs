//! Contextual tag rules for noun-chunking captions, applied after the lexical tags of
//! [`crate::tagger::BrillTagger::tag_lexical`] (AMP §3.1.3 needs nouns and their chunks).
//!
//! Brill's contextual rules (textblob's `en-context.txt`) were learned on newswire and misfire on
//! image captions ("parked at the curb" → `at/VB`; "are drinking coffee" → `drinking/PRP
//! coffee/VBP`). These few rules replace them for the chunker; each fixes a noun/verb confusion
//! that merges or splits noun chunks. They were tuned on the captions and demo-world text of
//! `tests/data/spacy/` and measured on a held-out set against spaCy `en_core_web_sm`
//! (`tests/spacy_chunks.rs`, docs/benchmarks.md). In order:
//!
//! 1. **After a determiner** (DT, PRP$, WP$ or a genitive `' s`, then adjectives/numbers), a base
//!    verb (VB/VBP) is a noun: "the curb", "a stick".
//! 2. **After a preposition** (not a subordinator such as *while*, *as*, *that*), a finite verb is
//!    a noun: "covered with leaves".
//! 3. **Progressive**: an `-ing` word tagged NN after a form of *be* is VBG: "are drinking".
//! 4. **A preposition's adjective object** before punctuation is a noun: "In total,".
//! 5. **Noun between a noun and a preposition/punctuation**, tagged JJ, is a noun: "a fruit tart
//!    with kiwis"; not before *of* ("a bus full of passengers").
//! 6. **The main verb hidden in a noun compound**: in a sentence without a finite verb, the last
//!    word of a noun compound is the verb when it agrees with the subject and what follows cannot
//!    continue a noun phrase's compound: a plural subject and a base form ("Green trees line the
//!    road", "Three cups of coffee sit on a tray", "The children laugh as ..."), or a singular
//!    subject and an `-s` form followed by a determiner, pronoun, adverb, conjunction or the end
//!    of the clause ("The dog jumps and ..."), or an `-s` form right after a regular plural
//!    ("A bus full of passengers drives past", "A boy in rain boots jumps"). A singular noun's
//!    `-s` word before a preposition stays a noun and ends the search ("A sailboat drifts on"
//!    against "police officers on horses": on form the two readings are ambiguous, and the
//!    subject is then unknown; after `a`/`an` only the verb is grammatical, but spaCy, the
//!    reference, reads the compound about as often, so no rule decides it: see
//!    `CAPTION_FLOOR` in `tests/spacy_chunks.rs`). A later compound at the very end of the sentence is an object,
//!    not a verb ("Two boys playing soccer on a dirt field."). Clauses are split at subordinators
//!    and *wh*-adverbs; a finite verb right after a relative pronoun does not count.
//! 7. A singular noun + a base verb is a compound: "the bus stop", "a glass stand"; never an
//!    auxiliary ("a woman are", [`AUX`]).
//! 8. An `-ing` word tagged NN after a noun or preposition and before a determiner or pronoun is
//!    VBG: "a bench reading a newspaper", "before drinking it".
//! 9. An `-s` verb after VBG, or after an adjective that follows a verb (not a participle),
//!    determiner, preposition or number, is a plural noun: "eating leaves", "makes funny faces";
//!    not "a house painted yellow sits", nor an auxiliary ("the other is").
//! 10. A determiner + adjective or adverb before punctuation is a noun: "at the fair.", "on its
//!     back.".
//! 11. "left" after a determiner, noun or adjective is the side: "in the middle left".
//! 12. A determiner + adverb before a noun is a modifier: "the back seat".
//! 13. A spatial word ([`SPATIAL`]) before a determiner, possessive or number is a preposition:
//!     "walks her dog past a shop", "riding bicycles down the lane".
//! 14. A past tense right before a noun, after a determiner, conjunction, preposition or comma,
//!     is a participle modifier: "berries and whipped cream".
//! 15. An `-s` word right after a relative pronoun that follows a noun is the relative clause's
//!     verb: "the dog that lives next door".
//! 16. An `-s` word between an `-ly` adverb and a determiner is a verb: "parked illegally blocks
//!     the driveway".
//! 17. "light", "dark", "pale" before an adjective modify it: "painted light blue".
//! 18. An `-s` word after a singular noun and before *and* + a verb is a verb: "The dog jumps and
//!     catches the frisbee".
//! 19. "next door" is an adverb (spaCy makes no noun chunk of it).
//! 20. **The main verb after a non-restrictive relative clause**: in a sentence without another
//!     main verb, the word right after the comma that closes ", who/which ...," is the verb when
//!     it agrees with the subject before the clause: "The children, who are wearing uniforms,
//!     line up in front of the school".
//! 21. An irregular verb whose participle is its base form ([`SAME_PARTICIPLE`]: "cut", "set",
//!     ...) is a participle, not rule 7's compound, before a preposition other than *of*: "A
//!     sandwich cut in half" (but "a bus stop in the rain" and "a cut of meat").
//! 22. "o'clock", which the tokenizer splits into `o ' clock`, is one noun after a number: "shows
//!     ten o'clock" (Penn tags it RB; as an object it heads a noun phrase).

/// Subordinating words Penn tags IN that never start a prepositional phrase.
pub const SUBORDINATORS: &[&str] = &[
    "while", "as", "because", "if", "that", "since", "although", "though", "whether", "than",
    "until", "unless", "once", "so", "whereas",
];

const BE: &[&str] = &[
    "is", "are", "was", "were", "be", "been", "being", "am", "'s", "'re", "'m",
];

/// Auxiliaries and copulas: never retagged as nouns by the rules below ("a woman are" is not a
/// compound, "the other is" not a plural noun).
const AUX: &[&str] = &[
    "is", "are", "was", "were", "be", "been", "am", "has", "have", "had", "does", "do", "did",
    "can", "could", "will", "would", "may", "might", "must", "shall", "should",
];

/// Spatial words that are prepositions before a determiner, possessive or number ("walks her dog
/// past a shop", "riding bicycles down the lane"), whatever their lexicon tag.
const SPATIAL: &[&str] = &[
    "up", "down", "past", "across", "along", "over", "around", "through", "behind", "inside",
    "outside", "near", "off",
];

/// Irregular verbs whose past participle is their base form (rule 21).
const SAME_PARTICIPLE: &[&str] = &[
    "cut", "set", "put", "hit", "split", "spread", "shut", "let", "cast", "burst",
];

/// Plural nouns Penn tags NN or that do not end in `-s`.
const PLURAL_WORDS: &[&str] = &[
    "people", "children", "men", "women", "police", "feet", "teeth", "mice", "geese",
];

fn is_noun(t: &str) -> bool {
    t.starts_with("NN")
}
fn is_finite(t: &str) -> bool {
    matches!(t, "VBZ" | "VBP" | "VBD" | "MD")
}

/// Whether token `i` is a preposition (IN, not a subordinator).
pub fn is_preposition(tokens: &[String], tags: &[String], i: usize) -> bool {
    tags.get(i).is_some_and(|t| t == "IN")
        && !SUBORDINATORS.contains(&tokens[i].to_lowercase().as_str())
}

fn plural(tok: &str, tag: &str) -> bool {
    tag == "NNS" || tag == "NNPS" || PLURAL_WORDS.contains(&tok.to_lowercase().as_str())
}

fn third_singular(tok: &str) -> bool {
    tok.len() > 2 && tok.ends_with('s') && !tok.ends_with("ss") && !tok.ends_with("us")
}

/// Applies the rules of the module docs to one sentence's tags, in place (rule 6 last).
pub fn retag(tokens: &[String], tags: &mut [String]) {
    let n = tags.len();
    let lower: Vec<String> = tokens.iter().map(|t| t.to_lowercase()).collect();
    for i in 0..n {
        // 1. determiner (+ adjectives/numbers) + base verb -> noun
        if matches!(tags[i].as_str(), "VB" | "VBP") {
            let mut j = i;
            while j > 0 && matches!(tags[j - 1].as_str(), "JJ" | "JJR" | "JJS" | "CD") {
                j -= 1;
            }
            let det = j > 0
                && ((matches!(tags[j - 1].as_str(), "DT" | "PRP$" | "WP$")
                    && lower[j - 1] != "that")
                    || (j >= 2 && tokens[j - 1] == "s" && tokens[j - 2] == "'"));
            if det {
                tags[i] = "NN".into();
            }
        }
        // 2. preposition + finite verb -> noun
        if i > 0
            && matches!(tags[i].as_str(), "VBZ" | "VBP" | "VB")
            && is_preposition(tokens, tags, i - 1)
            && !tags
                .get(i + 1)
                .is_some_and(|t| matches!(t.as_str(), "DT" | "PRP$"))
        {
            tags[i] = if third_singular(&lower[i]) {
                "NNS"
            } else {
                "NN"
            }
            .into();
        }
        // 3. be + -ing (tagged NN) -> VBG
        if i > 0
            && tags[i] == "NN"
            && lower[i].ends_with("ing")
            && BE.contains(&lower[i - 1].as_str())
        {
            tags[i] = "VBG".into();
        }
        // 4. preposition + adjective + punctuation/end -> noun
        if i > 0
            && tags[i] == "JJ"
            && is_preposition(tokens, tags, i - 1)
            && (i + 1 == n || matches!(tags[i + 1].as_str(), "," | "." | ":"))
        {
            tags[i] = "NN".into();
        }
        if i > 0
            && matches!(tags[i].as_str(), "JJ" | "RB")
            && is_preposition(tokens, tags, i - 1)
            && lower.get(i + 1).is_some_and(|w| w == "of")
        {
            tags[i] = "NN".into();
        }
        // 5. det .. noun + JJ + (preposition | punctuation | end) -> noun
        if i >= 2
            && tags[i] == "JJ"
            && is_noun(&tags[i - 1])
            && lower.get(i + 1).is_none_or(|w| w != "of")
            && matches!(tags[i - 2].as_str(), "DT" | "NN" | "JJ" | "PRP$")
            && (i + 1 == n
                || matches!(
                    tags[i + 1].as_str(),
                    "," | "." | "CC" | "VBZ" | "VBP" | "VBD" | "MD"
                )
                || is_preposition(tokens, tags, i + 1))
        {
            tags[i] = "NN".into();
        }
        // 21. a noun + an irregular participle equal to its base form + a preposition (not
        //     "of"): the participle ("A sandwich cut in half"); checked before rule 7 turns it
        //     into a compound
        if i > 0
            && matches!(tags[i].as_str(), "VB" | "VBP" | "VBD" | "VBN" | "NN")
            && SAME_PARTICIPLE.contains(&lower[i].as_str())
            && is_noun(&tags[i - 1])
            && is_preposition(tokens, tags, i + 1)
            && lower[i + 1] != "of"
        {
            tags[i] = "VBN".into();
        }
        // 7. singular noun + base verb -> compound noun ("the bus stop", "a glass stand")
        if i > 0
            && matches!(tags[i].as_str(), "VB" | "VBP")
            && tags[i - 1] == "NN"
            && !AUX.contains(&lower[i].as_str())
            && !PLURAL_WORDS.contains(&lower[i - 1].as_str())
            && i >= 2
            && matches!(tags[i - 2].as_str(), "DT" | "JJ" | "PRP$" | "NN" | "CD")
        {
            tags[i] = "NN".into();
        }
        // 8. -ing noun + determiner/pronoun (or after a preposition) -> VBG
        if tags[i] == "NN"
            && lower[i].ends_with("ing")
            && lower[i].len() > 5
            && (tags
                .get(i + 1)
                .is_some_and(|t| matches!(t.as_str(), "DT" | "PRP$" | "PRP" | "CD"))
                && (i > 0 && (is_noun(&tags[i - 1]) || tags[i - 1] == "IN")))
        {
            tags[i] = "VBG".into();
        }
        // 9. verb + -s verb, or adjective after a verb/determiner + -s verb -> plural noun
        //    ("eating leaves", "makes funny faces")
        if i > 0 && tags[i] == "VBZ" && !AUX.contains(&lower[i].as_str()) {
            let p = tags[i - 1].as_str();
            let pp = if i >= 2 { tags[i - 2].as_str() } else { "" };
            // not after a participle's complement: "a house painted yellow sits"
            if p == "VBG"
                || (p == "JJ"
                    && ((pp.starts_with("VB") && pp != "VBN")
                        || matches!(pp, "DT" | "PRP$" | "IN" | "CD")))
            {
                tags[i] = "NNS".into();
            }
        }
        // 11. "left" after a determiner, noun or adjective is the side ("the middle left",
        //     "to the left of")
        if i > 0
            && lower[i] == "left"
            && (matches!(tags[i - 1].as_str(), "DT" | "JJ") || is_noun(&tags[i - 1]))
            && !tags
                .get(i + 1)
                .is_some_and(|t| matches!(t.as_str(), "DT" | "PRP$" | "PRP"))
        {
            tags[i] = "NN".into();
        }
        // 10. determiner + adjective before punctuation/end -> noun ("at the fair.")
        if i > 0
            && matches!(tags[i].as_str(), "JJ" | "RB")
            && matches!(tags[i - 1].as_str(), "DT" | "PRP$")
            && (i + 1 == n || matches!(tags[i + 1].as_str(), "," | "." | ":"))
        {
            tags[i] = "NN".into();
        }
        // 12. determiner + adverb + noun: the adverb is a modifier ("the back seat")
        if i > 0
            && tags[i] == "RB"
            && matches!(tags[i - 1].as_str(), "DT" | "PRP$")
            && tags.get(i + 1).is_some_and(|t| is_noun(t))
        {
            tags[i] = "JJ".into();
        }
        // 13. a spatial word before a determiner, possessive or number is a preposition
        if SPATIAL.contains(&lower[i].as_str())
            && matches!(tags[i].as_str(), "RB" | "RP" | "JJ")
            && tags
                .get(i + 1)
                .is_some_and(|t| matches!(t.as_str(), "DT" | "PRP$" | "CD"))
        {
            tags[i] = "IN".into();
        }
        // 14. a past tense directly before a noun, after a determiner, conjunction, preposition
        //     or comma, is a participle modifier ("berries and whipped cream")
        if tags[i] == "VBD"
            && tags.get(i + 1).is_some_and(|t| is_noun(t))
            && (i == 0 || matches!(tags[i - 1].as_str(), "DT" | "PRP$" | "CC" | "IN" | ","))
        {
            tags[i] = "VBN".into();
        }
        // 15. right after a relative pronoun that follows a noun, an -s word is the relative
        //     clause's verb ("the dog that lives next door")
        if i >= 2
            && tags[i] == "NNS"
            && third_singular(&lower[i])
            && (matches!(tags[i - 1].as_str(), "WDT" | "WP") || lower[i - 1] == "that")
            && is_noun(&tags[i - 2])
        {
            tags[i] = "VBZ".into();
        }
        // 16. an -s word between an -ly adverb and a determiner is a verb ("illegally blocks the")
        if i > 0
            && tags[i] == "NNS"
            && third_singular(&lower[i])
            && tags[i - 1] == "RB"
            && lower[i - 1].ends_with("ly")
            && tags
                .get(i + 1)
                .is_some_and(|t| matches!(t.as_str(), "DT" | "PRP$"))
        {
            tags[i] = "VBZ".into();
        }
        // 17. "light", "dark" or "pale" before an adjective modify it ("painted light blue")
        if matches!(lower[i].as_str(), "light" | "dark" | "pale")
            && is_noun(&tags[i])
            && tags.get(i + 1).is_some_and(|t| t == "JJ")
            && !tags.get(i + 2).is_some_and(|t| is_noun(t))
        {
            tags[i] = "JJ".into();
        }
        // 18. an -s word after a singular noun, coordinated with a verb, is a verb too ("The dog
        //     jumps and catches the frisbee")
        if i > 0
            && tags[i] == "NNS"
            && third_singular(&lower[i])
            && tags[i - 1] == "NN"
            && !plural(&tokens[i - 1], &tags[i - 1])
            && tags.get(i + 1).is_some_and(|t| t == "CC")
            && tags.get(i + 2).is_some_and(|t| t == "VBZ")
        {
            tags[i] = "VBZ".into();
        }
        // 19. "next door" is an adverb ("the dog that lives next door")
        if lower[i] == "door" && i > 0 && lower[i - 1] == "next" {
            tags[i - 1] = "RB".into();
            tags[i] = "RB".into();
        }
        // 20. the word after ", who/which ... ," is the main verb when it agrees with the
        //     subject ("The children, who are wearing uniforms, line up")
        if let Some(verb) = verb_after_relative(tokens, &lower, tags, i) {
            tags[i] = verb.into();
        }
        // 22. "o ' clock" after a number is one noun ("ten o'clock")
        if i >= 3
            && lower[i] == "clock"
            && tokens[i - 1] == "'"
            && lower[i - 2] == "o"
            && tags[i - 3] == "CD"
        {
            for t in &mut tags[i - 2..=i] {
                *t = "NN".into();
            }
        }
    }
    // 6. the main verb inside a noun compound, per clause
    let mut start = 0;
    for k in 0..=n {
        let boundary = k == n
            || (k > start
                && (tags[k] == "WRB"
                    || (tags[k] == "IN" && SUBORDINATORS.contains(&lower[k].as_str()))));
        if boundary {
            if clause_verb(tokens, &lower, tags, start, k) {
                return;
            }
            start = k;
        }
    }
}

/// Rule 20: the verb tag for token `i` when it directly follows the comma closing a
/// non-restrictive relative clause (", who/which ... ,") after a simple subject noun phrase, no
/// finite verb follows, and it agrees with the subject (a base form after a plural, an `-s`
/// form after a singular).
fn verb_after_relative(
    tokens: &[String],
    lower: &[String],
    tags: &[String],
    i: usize,
) -> Option<&'static str> {
    if i < 4 || tags[i - 1] != "," || !matches!(tags[i].as_str(), "NN" | "NNS" | "VB") {
        return None;
    }
    // the opening ", who" / ", which", with no comma in between
    let open = (1..i - 2)
        .rev()
        .take_while(|&k| tags[k + 1] != ",")
        .find(|&k| tags[k] == "," && matches!(lower[k + 1].as_str(), "who" | "which"))?;
    let subj = open - 1;
    if !is_noun(&tags[subj])
        || !(0..subj).all(|k| {
            matches!(
                tags[k].as_str(),
                "DT" | "PRP$" | "CD" | "JJ" | "JJR" | "JJS"
            ) || is_noun(&tags[k])
        })
        || tags[i + 1..].iter().any(|t| is_finite(t))
    {
        return None;
    }
    if plural(&tokens[subj], &tags[subj]) {
        (tags[i] != "NNS" && !third_singular(&lower[i])).then_some("VBP")
    } else {
        (tags[i] == "NNS" && third_singular(&lower[i])).then_some("VBZ")
    }
}

/// Rule 6 on the clause `[a, b)`: returns whether it changed a tag.
fn clause_verb(
    tokens: &[String],
    lower: &[String],
    tags: &mut [String],
    a: usize,
    b: usize,
) -> bool {
    let relative = |k: usize| {
        let mut j = k;
        while j > a && tags[j - 1].starts_with("RB") {
            j -= 1;
        }
        j > a && (matches!(tags[j - 1].as_str(), "WDT" | "WP") || lower[j - 1] == "that")
    };
    if (a..b).any(|k| (is_finite(&tags[k]) || tags[k] == "VB") && !relative(k)) {
        return false;
    }
    let n = b;
    let mut subject: Option<usize> = None;
    let mut i = a;
    while i < n {
        if !is_noun(&tags[i]) {
            // a participle or a comma after the subject opens a modifier: its nouns are not
            // where the main verb hides ("Two boys playing soccer on a dirt field")

            i += 1;
            continue;
        }
        let a = i;
        while i < n && is_noun(&tags[i]) {
            i += 1;
        }
        let b = i;
        let head = subject.unwrap_or(b - 1);
        // an -s word inside a longer compound followed by a noun: "An elephant sprays water"
        for k in a + 1..b.saturating_sub(1) {
            let subj = subject.unwrap_or(k - 1);
            if third_singular(&lower[k])
                && tags[k] == "NNS"
                && tags[k - 1] == "NN"
                && !(subject.is_some() && third_singular(&lower[k + 1]) && tags[k + 1] == "NNS")
                && !plural(&tokens[subj], &tags[subj])
            {
                tags[k] = "VBZ".into();
                return true;
            }
        }
        if b - a >= 2 {
            let w = b - 1;
            let subj = if subject.is_some() { head } else { w - 1 };
            // the end of the clause (a subordinator follows) counts as the end
            let next = if b == n {
                ""
            } else {
                tags.get(b).map(String::as_str).unwrap_or("")
            };
            let plural_subject = plural(&tokens[subj], &tags[subj]);
            // a later compound at the very end is an object, not a verb: "Two boys playing
            // soccer on a dirt field."
            let at_end = matches!(next, "." | "");
            let verb = if subject.is_some() && at_end {
                false
            } else if plural_subject {
                tags[w] == "NN"
                    && !third_singular(&lower[w])
                    && (matches!(
                        next,
                        "DT" | "PRP$" | "RB" | "RP" | "CD" | "PRP" | "TO" | "." | "" | "CC"
                    ) || is_preposition(tokens, tags, b))
            } else {
                third_singular(&lower[w])
                    && (matches!(next, "DT" | "PRP$" | "RB" | "RP" | "PRP" | "." | "" | "CC")
                        // after a regular plural the -s word cannot be the compound's head:
                        // "A bus full of passengers drives past"
                        || (subject.is_some()
                            && tags[w - 1] == "NNS"
                            && third_singular(&lower[w - 1])))
            };
            if verb {
                tags[w] = if plural_subject { "VBP" } else { "VBZ" }.into();
                return true;
            }
            // a singular noun + an -s word before a preposition: the verb reading is as likely
            // as the plural compound's, and the subject is unknown; leave the clause alone
            if subject.is_none()
                && third_singular(&lower[w])
                && tags[w] == "NNS"
                && !plural(&tokens[w - 1], &tags[w - 1])
            {
                return false;
            }
        }
        if subject.is_none() {
            subject = Some(b - 1);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &str, tags: &str) -> String {
        let tokens: Vec<String> = words.split(' ').map(String::from).collect();
        let mut tags: Vec<String> = tags.split(' ').map(String::from).collect();
        retag(&tokens, &mut tags);
        tags.join(" ")
    }

    #[test]
    fn rules_by_hand() {
        assert_eq!(run("at the curb", "IN DT VB"), "IN DT NN");
        assert_eq!(run("covered with leaves", "VBN IN VBZ"), "VBN IN NNS");
        assert_eq!(run("are drinking coffee", "VBP NN NN"), "VBP VBG NN");
        assert_eq!(run("In total ,", "IN JJ ,"), "IN NN ,");
        assert_eq!(
            run("A fruit tart with kiwis", "DT NN JJ IN NNS"),
            "DT NN NN IN NNS"
        );
        assert_eq!(
            run("Green trees line the road", "NNP NNS NN DT NN"),
            "NNP NNS VBP DT NN"
        );
        assert_eq!(
            run(
                "Three cups of coffee sit on a tray",
                "CD NNS IN NN NN IN DT NN"
            ),
            "CD NNS IN NN VBP IN DT NN"
        );
        assert_eq!(run("The dog jumps and", "DT NN NNS CC"), "DT NN VBZ CC");
        // ambiguous: stays a compound
        assert_eq!(
            run("Two police officers on horses", "CD NN NNS IN NNS"),
            "CD NN NNS IN NNS"
        );
        // a finite verb elsewhere: nothing to find
        assert_eq!(
            run("The bedroom walls are blue", "DT NN NNS VBP JJ"),
            "DT NN NNS VBP JJ"
        );
        // a subordinator is not a preposition; the clause after it has its own verb
        assert_eq!(
            run(
                "holds a kite while her father watches",
                "VBZ DT NN IN PRP$ NN NNS"
            ),
            "VBZ DT NN IN PRP$ NN VBZ"
        );
        assert_eq!(run("the bus stop in", "DT NN VB IN"), "DT NN NN IN");
        assert_eq!(
            run("a bench reading a paper", "DT NN NN DT NN"),
            "DT NN VBG DT NN"
        );
        assert_eq!(run("is eating leaves", "VBZ VBG VBZ"), "VBZ VBG NNS");
        assert_eq!(
            run("An elephant sprays water", "DT NN NNS NN"),
            "DT NN VBZ NN"
        );
        // a finite verb in a relative clause is not the main verb
        assert_eq!(
            run(
                "A girl who is wearing a helmet rides her scooter",
                "DT NN WP VBZ VBG DT NN NNS PRP$ NN"
            ),
            "DT NN WP VBZ VBG DT NN VBZ PRP$ NN"
        );
        // auxiliaries stay verbs
        assert_eq!(run("a woman are", "DT NN VBP"), "DT NN VBP");
        assert_eq!(
            run("the other is sitting", "DT JJ VBZ VBG"),
            "DT JJ VBZ VBG"
        );
        assert_eq!(
            run("a house painted yellow sits on", "DT NN VBN JJ VBZ IN"),
            "DT NN VBN JJ VBZ IN"
        );
        assert_eq!(run("a bus full of", "DT NN JJ IN"), "DT NN JJ IN");
        assert_eq!(run("on its back .", "IN PRP$ RB ."), "IN PRP$ NN .");
        assert_eq!(run("the back seat", "DT RB NN"), "DT JJ NN");
        assert_eq!(
            run("her dog past a shop", "PRP$ NN JJ DT NN"),
            "PRP$ NN IN DT NN"
        );
        assert_eq!(run("and whipped cream", "CC VBD NN"), "CC VBN NN");
        assert_eq!(
            run("the dog that lives here", "DT NN IN NNS RB"),
            "DT NN IN VBZ RB"
        );
        assert_eq!(
            run("parked illegally blocks the", "VBN RB NNS DT"),
            "VBN RB VBZ DT"
        );
        assert_eq!(run("painted light blue", "VBN NN JJ"), "VBN JJ JJ");
        assert_eq!(
            run("The dog jumps and catches", "DT NN NNS CC VBZ"),
            "DT NN VBZ CC VBZ"
        );
        assert_eq!(run("lives next door", "VBZ JJ NN"), "VBZ RB RB");
        assert_eq!(
            run(
                "The children , who are wearing uniforms , line up in",
                "DT NNS , WP VBP VBG NNS , NN IN IN"
            ),
            "DT NNS , WP VBP VBG NNS , VBP IN IN"
        );
        assert_eq!(
            run(
                "The dog , which is old , sleeps on",
                "DT NN , WDT VBZ JJ , NNS IN"
            ),
            "DT NN , WDT VBZ JJ , VBZ IN"
        );
        // ... not when a finite verb follows ("..., tree branches are ...")
        assert_eq!(
            run(
                "The children , who are young , cake pieces are",
                "DT NNS , WP VBP JJ , NN NNS VBP"
            ),
            "DT NNS , WP VBP JJ , NN NNS VBP"
        );
        assert_eq!(
            run("A sandwich cut in half", "DT NN VB IN NN"),
            "DT NN VBN IN NN"
        );
        assert_eq!(run("a cut of meat", "DT VB IN NN"), "DT NN IN NN");
        assert_eq!(
            run("shows ten o ' clock .", "VBZ CD IN POS NN ."),
            "VBZ CD NN NN NN ."
        );
        // rule 6: after a regular plural, the -s word is the verb
        assert_eq!(
            run(
                "A bus full of passengers drives past",
                "DT NN JJ IN NNS NNS IN"
            ),
            "DT NN JJ IN NNS VBZ IN"
        );
        assert_eq!(
            run("A boy in rain boots jumps in", "DT NN IN NN NNS NNS IN"),
            "DT NN IN NN NNS VBZ IN"
        );
        // ... a compound at the end of a verbless caption is an object
        assert_eq!(
            run(
                "Two boys playing soccer on a dirt field .",
                "CD NNS VBG NN IN DT NN NN ."
            ),
            "CD NNS VBG NN IN DT NN NN ."
        );
        // ... the end of a clause ends the compound
        assert_eq!(
            run("The children laugh as the", "DT NNS NN IN DT"),
            "DT NNS VBP IN DT"
        );
    }
}
