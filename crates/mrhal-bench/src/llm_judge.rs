//! The LLM judge: an OpenAI-compatible model (via `amp-chat`) with retries, backoff,
//! `Retry-After`, a timeout, bounded concurrency and an fsync'd response cache that keeps only
//! replies that parse into a rating.

use std::collections::BTreeMap;

use amp_chat::{ChatClient, ChatRequest, Message};

use crate::data::{LlavaItem, LlavaRule, MmhalItem, MrhalDialogue};
use crate::judge::{parse_llava_scores, parse_mmhal_rating, parse_mrhal_ratings, Judge, JudgeFailure, Verdict};
use crate::prompts::{content_list, mrhal_rounds_block, Template};

/// Sampling settings of judge requests.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeParams {
    /// Temperature; 0 (the default) makes requests cacheable.
    pub temperature: f32,
    /// Completion limit.
    pub max_tokens: u32,
    /// Seed, if any.
    pub seed: Option<u64>,
}

impl Default for JudgeParams {
    fn default() -> Self {
        JudgeParams { temperature: 0.0, max_tokens: 1024, seed: None }
    }
}

/// An LLM judge.
#[derive(Debug)]
pub struct LlmJudge {
    /// The chat client (its model is the judge model requested).
    pub client: ChatClient,
    /// Request parameters.
    pub params: JudgeParams,
    /// MRHal template.
    pub mrhal: Template,
    /// MMHal template.
    pub mmhal: Template,
    /// LLaVA-Bench template.
    pub llava: Template,
    /// LLaVA-Bench rules by key (`llava_bench_conv`, ...); empty → the default rule.
    pub llava_rules: BTreeMap<String, LlavaRule>,
}

impl LlmJudge {
    /// A judge with the default templates.
    pub fn new(client: ChatClient) -> Self {
        LlmJudge {
            client,
            params: JudgeParams::default(),
            mrhal: Template::mrhal_default(),
            mmhal: Template::mmhal_default(),
            llava: Template::llava_default(),
            llava_rules: BTreeMap::new(),
        }
    }

    fn ask<T>(
        &self,
        (system, user): (String, String),
        prompt_hash: String,
        parse: impl Fn(&str) -> Result<T, JudgeFailure>,
    ) -> Result<Verdict<T>, JudgeFailure> {
        let mut msgs = Vec::with_capacity(2);
        if !system.is_empty() {
            msgs.push(Message::system(system));
        }
        msgs.push(Message::user(user));
        let mut req = ChatRequest::new("", msgs).temperature(self.params.temperature).max_tokens(self.params.max_tokens);
        req.seed = self.params.seed;
        // Only a reply that parses into a rating is cached: a one-off unparsable reply is asked
        // again on a rerun instead of being replayed forever (docs/reliability.md).
        let resp = self
            .client
            .complete_validated(&req, |r| parse(&r.content).is_ok())
            .map_err(|e| JudgeFailure::Api(Box::new(e)))?;
        let value = parse(&resp.content)?;
        let judge_model = if resp.model.is_empty() { "(not reported by server)".to_string() } else { resp.model };
        Ok(Verdict { value, judge_model, raw: resp.content, prompt_hash })
    }

    fn llava_rule(&self, category: &str) -> (String, String) {
        let key = format!("llava_bench_{category}");
        match self.llava_rules.get(&key).or_else(|| self.llava_rules.get(category)) {
            Some(r) => (r.role.clone(), r.prompt.clone()),
            None => ("Assistant".into(), Template::llava_default_rule().into()),
        }
    }
}

impl Judge for LlmJudge {
    fn name(&self) -> String {
        format!("llm:{}", self.client.config().model)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "model_requested": self.client.config().model,
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
            "seed": self.params.seed,
            "templates": {
                "mrhal": self.mrhal.hash(""),
                "mmhal": self.mmhal.hash(""),
                "llava": self.llava.hash(&serde_json::to_string(&self.llava_rules).unwrap_or_default()),
            },
        })
    }

    fn rate_mrhal(&self, item: &MrhalDialogue, answers: &[String]) -> Result<Verdict<Vec<u8>>, JudgeFailure> {
        let n = item.rounds();
        if answers.len() != n {
            return Err(JudgeFailure::Unsupported(format!("{} answers for {n} rounds", answers.len())));
        }
        let rounds = mrhal_rounds_block(&item.questions, &item.references, answers);
        let content = content_list(&item.image_content);
        let nr = n.to_string();
        let prompt = self.mrhal.render(&[("n_rounds", &nr), ("image_content", &content), ("rounds", &rounds)]);
        self.ask(prompt, self.mrhal.hash(""), |raw| parse_mrhal_ratings(raw, n))
    }

    fn rate_mmhal(&self, item: &MmhalItem, answer: &str) -> Result<Verdict<u8>, JudgeFailure> {
        let content = content_list(&item.image_content);
        let prompt = self.mmhal.render(&[
            ("image_content", &content),
            ("question", &item.question),
            ("gt_answer", &item.gt_answer),
            ("answer", answer),
        ]);
        self.ask(prompt, self.mmhal.hash(""), parse_mmhal_rating)
    }

    fn rate_llava(&self, item: &LlavaItem, answer: &str) -> Result<Verdict<[f64; 2]>, JudgeFailure> {
        let (role, rule) = self.llava_rule(&item.category);
        let prompt = self.llava.render(&[
            ("context", &item.context),
            ("question", &item.text),
            ("role", &role),
            ("reference", &item.reference),
            ("answer", answer),
            ("rule", &rule),
        ]);
        self.ask(prompt, self.llava.hash(&format!("{role}\0{rule}")), parse_llava_scores)
    }
}
