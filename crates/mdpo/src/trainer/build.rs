//! Building a [`Trainer`]: MDPO, SFT or any task, on one process or as one rank of a data-parallel
//! group; the reference log-probs are precomputed (or loaded, checking their key) and the newest
//! checkpoint resumed; a data-parallel rank starts from rank 0's state.
use super::*;

impl<M: PreferenceModel> Trainer<M> {
    /// An MDPO trainer. Precomputes (or loads, checking its key) the reference log-probs and
    /// resumes from the newest checkpoint in `output_dir` when `config.resume`.
    pub fn new(policy: M, reference: Reference<M>, examples: Vec<PreferenceExample>, config: MdpoConfig) -> Result<Self> {
        Self::build(policy, reference, examples, config, Task::Preference, Box::new(SingleProcess))
    }

    /// An SFT trainer (masked NLL on the response tokens, normalised by the total token weight of
    /// the optimizer step) on K = 1 examples; `config.levels` is set to 1 and `loss` is ignored.
    pub fn sft(policy: M, examples: Vec<PreferenceExample>, mut config: MdpoConfig) -> Result<Self> {
        config.levels = 1;
        Self::build(policy, Reference::None, examples, config, Task::Sft, Box::new(SingleProcess))
    }

    /// A data-parallel trainer: this process is rank `comm.rank()` of `comm.world_size()`, each
    /// rank running `batch_size × grad_accum` examples of every global step (so the global batch
    /// is `batch_size × grad_accum × world_size`). Every rank must be given the same model,
    /// data and config; rank 0's weights, optimizer state and progress are broadcast to the
    /// others once set up (resuming needs `output_dir` on rank 0 only). docs/distributed.md.
    pub fn with_collective(
        task: Task,
        policy: M,
        reference: Reference<M>,
        examples: Vec<PreferenceExample>,
        mut config: MdpoConfig,
        comm: Box<dyn Collective>,
    ) -> Result<Self> {
        if task == Task::Sft {
            config.levels = 1;
        }
        let reference = if task == Task::Sft { Reference::None } else { reference };
        Self::build(policy, reference, examples, config, task, comm)
    }

    /// [`Self::new`] or [`Self::sft`] by `task` (the reference is unused for SFT).
    pub fn for_task(
        task: Task,
        policy: M,
        reference: Reference<M>,
        examples: Vec<PreferenceExample>,
        config: MdpoConfig,
    ) -> Result<Self> {
        match task {
            Task::Preference => Self::new(policy, reference, examples, config),
            Task::Sft => Self::sft(policy, examples, config),
        }
    }

    fn build(
        mut policy: M,
        mut reference: Reference<M>,
        examples: Vec<PreferenceExample>,
        mut cfg: MdpoConfig,
        task: Task,
        comm: Box<dyn Collective>,
    ) -> Result<Self> {
        cfg.world_size = comm.world_size();
        cfg.validate(task == Task::Preference)?;
        if examples.is_empty() {
            return Err(MdpoError::Config("no training examples".into()));
        }
        if let Some((i, ex)) = examples.iter().enumerate().find(|(_, e)| e.levels() != cfg.levels) {
            return Err(MdpoError::Config(format!(
                "example {i} (id {}) has {} levels, the config says K = {}",
                ex.id,
                ex.levels(),
                cfg.levels
            )));
        }
        policy.set_round_weight(cfg.round_weight)?;
        policy.check_examples(&examples).map_err(MdpoError::model)?;
        if let Reference::Model(r) = &mut reference {
            r.set_round_weight(cfg.round_weight)?;
            if r.encoding_fingerprint() != policy.encoding_fingerprint() {
                return Err(MdpoError::Config(
                    "the reference model encodes differently from the policy (encoding_fingerprint differs)".into(),
                ));
            }
        }
        if task == Task::Preference {
            match &reference {
                Reference::None if !cfg.loss.reference_free => {
                    return Err(MdpoError::Config("Reference::None needs loss.reference_free = true".into()))
                }
                Reference::Cached { .. } if !cfg.precompute_reference => {
                    return Err(MdpoError::Config("Reference::Cached needs precompute_reference = true".into()))
                }
                _ => {}
            }
        }
        let mut params: Vec<(String, Tensor)> =
            policy.trainable_vars().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if params.is_empty() {
            return Err(MdpoError::Config("the model has no trainable variables".into()));
        }
        let opt = AdamW::new(params, cfg.adamw.clone());
        let data = fingerprint_examples(&examples)?;
        let steps_per_epoch = examples.len().div_ceil(cfg.global_batch());
        let total_steps = cfg.max_steps.unwrap_or(cfg.epochs * steps_per_epoch);
        let state = TrainState::new(data, cfg.seed);
        let perm = (0, order_of(&cfg, &examples, 0));
        let mut t = Self {
            cfg,
            task,
            policy,
            reference,
            ref_table: None,
            examples,
            opt,
            state,
            total_steps,
            perm,
            metrics: None,
            comm,
            comm_secs: 0.0,
        };
        std::fs::create_dir_all(&t.cfg.output_dir).map_err(checkpoint::io_err(&t.cfg.output_dir))?;
        if t.task == Task::Preference && t.cfg.precompute_reference && !matches!(t.reference, Reference::None) {
            let chunks = t.chunks();
            t.ref_table = Some(refs::prepare_cache(
                &t.policy,
                &t.reference,
                &t.examples,
                &t.state.data,
                &chunks,
                &t.cfg,
                t.comm.as_ref(),
            )?);
        }
        if !t.comm.is_main() {
            // Weights, optimizer state and progress come from rank 0.
            t.sync_from_main()?;
            return Ok(t);
        }
        match t.latest_checkpoint()? {
            Some(dir) if t.cfg.resume => t.load_checkpoint(&dir)?,
            Some(dir) => {
                return Err(MdpoError::Config(format!(
                    "{} holds checkpoint {}: set resume = true or use another output_dir",
                    t.cfg.output_dir.display(),
                    dir.display()
                )))
            }
            None => {
                // The initial state is the first checkpoint: a run killed before its first
                // periodic checkpoint resumes from the same initial weights.
                t.metrics = Some(MetricsLog::open(&t.cfg.output_dir, None)?);
                t.save_checkpoint()?;
            }
        }
        t.sync_from_main()?;
        Ok(t)
    }

    /// Data parallel: broadcast rank 0's trainable weights, AdamW moments and progress (step,
    /// data cursor, skip count, AdamW's update count) to every rank, as DistributedDataParallel
    /// broadcasts the initial weights. Nothing for one rank.
    fn sync_from_main(&mut self) -> Result<()> {
        if self.comm.world_size() == 1 {
            return Ok(());
        }
        let s = &self.state;
        let mut progress = vec![Tensor::from_slice(&[
            s.step as i64,
            s.epoch as i64,
            s.offset as i64,
            s.skipped as i64,
            s.adam_t as i64,
            s.last_skipped as i64,
        ])];
        self.comm.broadcast(&mut progress, 0)?;
        let p = Vec::<i64>::try_from(&progress[0])?;
        let s = &mut self.state;
        (s.step, s.epoch, s.offset, s.skipped, s.adam_t, s.last_skipped) =
            (p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize, p[4] as u64, p[5] != 0);
        self.opt.t = self.state.adam_t;
        let mut params: Vec<Tensor> = self.opt.params().iter().map(Tensor::shallow_clone).collect();
        tch::no_grad(|| broadcast_buckets(self.comm.as_ref(), &mut params, 0, DEFAULT_BUCKET_BYTES))?;
        let mut moments = self.opt.moments();
        broadcast_buckets(self.comm.as_ref(), &mut moments, 0, DEFAULT_BUCKET_BYTES)?;
        Ok(())
    }
}
