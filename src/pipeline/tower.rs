//! Stage 0: one shared vision tower, trained alone on the world's per-cell labels, then frozen
//! for every expert and every preference run — as every LLaVA-1.5 size shares one frozen CLIP
//! (LLaVA §4; AMP §4.1 freezes it too).
//!
//! The tower is a CLIP ViT ([`mllm::clip_vision::ClipVisionTransformer`]) whose patch grid is the
//! world's 3×3 grid (one patch per cell). A linear head on each patch token predicts that
//! cell's shape (or "empty"), colour and size, and which cell the token is; only the tower is
//! kept. Trained from scratch
//! through a small language model the tower never learns shape in the demo's budget
//! (docs/demo.md); trained on the scene graph's labels it does in seconds.
//!
//! The saved directory is a standard Hugging Face `CLIPVisionModel` checkpoint: `config.json`,
//! `model.safetensors` (keys `vision_model.*`) and `preprocessor_config.json`.
use super::{io_err, write_json, DemoError, Result};
use amp_world::rng::Rng;
use amp_world::{Colour, SceneIndex, Shape, Size, WorldConfig};
use mllm::clip_vision::ClipVisionTransformer;
use mllm::config::{ClipVisionConfig, SelectFeature};
use mllm::image_processor::ImageProcessor;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// The stage-0 tower and its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TowerSpec {
    pub hidden: i64,
    pub layers: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Also train each patch token to say which cell it is (see [`Heads`]). Absent in older
    /// configs: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub position: bool,
    /// Also train the CLS token to say which colour-shape pairs the image holds (see
    /// [`Heads`]); the experts then take CLS and patch tokens (LLaVA's `full` feature
    /// selection). Absent in older configs: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
}

/// Held-out per-cell accuracy of the trained tower (on the benchmark scenes, never trained on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TowerReport {
    pub train_images: usize,
    pub held_out_images: usize,
    /// Empty vs occupied, per cell.
    pub occupancy: f64,
    /// Shape (with "empty" as a class), per cell.
    pub shape: f64,
    /// Colour and size of the occupied cells.
    pub colour: f64,
    pub size: f64,
    /// Occupied cells with shape, colour and size all right.
    pub all_attributes: f64,
    /// Every patch token's own grid cell, read back from its feature (see [`Heads`]), when the
    /// tower was trained to keep it.
    #[serde(default)]
    pub position: Option<f64>,
    /// Colour-shape pairs read right (present or absent) from the CLS token, over all pairs of
    /// every held-out image, when the tower was trained to keep them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<f64>,
    /// Held-out images whose every colour-shape pair the CLS token reads right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_images: Option<f64>,
    pub final_loss: f64,
}

/// Model weights file of a checkpoint directory.
pub const WEIGHTS: &str = "model.safetensors";

/// The CLIP configuration of a tower over `image_size` px images: one patch per grid cell, a 4×
/// MLP, one head per 16 dims (at least 2).
pub fn vision_config(hidden: i64, layers: usize, image_size: i64) -> ClipVisionConfig {
    let mut v = ClipVisionConfig::clip_vit_large_patch14_336();
    v.hidden_size = hidden;
    v.intermediate_size = 4 * hidden;
    v.num_hidden_layers = layers;
    v.num_attention_heads = (hidden / 16).max(2);
    v.image_size = image_size;
    v.patch_size = image_size / 3;
    v
}

/// Class counts of the three heads: shape (+ empty), colour, size.
fn classes(w: &WorldConfig) -> (i64, i64, i64) {
    (w.n_shapes as i64 + 1, w.n_colours as i64, w.n_sizes as i64)
}

/// The labels of a batch: per cell `[N, 9]` (shape class with 0 = empty; colour and size with
/// −100 on empty cells) and per image `[N, colours × shapes]` (1 where the image holds an object
/// of that colour and shape, index `colour × shapes + shape`).
struct Labels {
    shape: Tensor,
    colour: Tensor,
    size: Tensor,
    presence: Tensor,
}

/// Pixels `[N, 3, S, S]` and the labels of the scenes `ids`.
fn batch_of(world: &Path, cfg: &WorldConfig, scenes: &SceneIndex, ids: &[String], proc: &ImageProcessor) -> Result<(Tensor, Labels)> {
    let sizes = Size::set(cfg.n_sizes);
    let (n_colours, n_shapes) = (cfg.n_colours, cfg.n_shapes);
    let mut px = Vec::with_capacity(ids.len());
    let (mut sh, mut co, mut si) = (Vec::new(), Vec::new(), Vec::new());
    let mut pr = vec![0f32; ids.len() * n_colours * n_shapes];
    for (k, id) in ids.iter().enumerate() {
        let path = world.join("images").join(amp_world::World::image_name(id));
        let img = ImageProcessor::open(&path).map_err(DemoError::from)?;
        px.push(proc.preprocess(&img));
        let scene = scenes.get(id).ok_or_else(|| DemoError::Config(format!("no scene {id} in {}", world.display())))?;
        for i in 0..9u8 {
            match scene.at(amp_world::Cell { row: i / 3, col: i % 3 }) {
                Some(o) => {
                    let s = Shape::ALL.iter().position(|s| *s == o.shape).expect("known");
                    let c = Colour::ALL.iter().position(|c| *c == o.colour).expect("known");
                    if s >= n_shapes || c >= n_colours {
                        return Err(DemoError::Config(format!("scene {id}: {:?} {:?} is outside the world's {n_colours} colours and {n_shapes} shapes", o.colour, o.shape)));
                    }
                    pr[(k * n_colours + c) * n_shapes + s] = 1.0;
                    sh.push(s as i64 + 1);
                    co.push(c as i64);
                    si.push(sizes.iter().position(|s| *s == o.size).ok_or_else(|| DemoError::Config(format!("scene {id}: size {:?} is not one of the world's", o.size)))? as i64);
                }
                None => {
                    sh.push(0);
                    co.push(-100);
                    si.push(-100);
                }
            }
        }
    }
    let n = ids.len() as i64;
    let t = |v: Vec<i64>| Tensor::from_slice(&v).view([n, 9]);
    let presence = Tensor::from_slice(&pr).view([n, (n_colours * n_shapes) as i64]);
    Ok((Tensor::stack(&px, 0), Labels { shape: t(sh), colour: t(co), size: t(si), presence }))
}

/// The tower with its training heads: per patch token, that cell's shape (or empty), colour and
/// size, and the token's own cell (one of 9); on the CLS token, which colour-shape pairs the
/// image holds.
///
/// The position head keeps each token's place in its feature. Without it the tower's features
/// said which cell they came from only 0.60 of the time (a linear probe), and the experts could
/// not answer questions that name a cell ("What shape is the object in the top left?": right
/// 0.51–0.57 while the same experts read shapes in captions 0.998 of the time; docs/demo.md).
/// A language model finds an image token by content, as CLIP's tokens carry their position.
///
/// The presence head is for existence questions ("Is there a red circle in the image?", POPE's
/// form). Answering them from patch tokens means finding the token that matches two words of
/// the question; experts of every size trained on patch tokens answered them at chance (0.44–0.58
/// in every run, docs/demo.md) while reading named cells well. With the CLS token trained on the
/// image's colour-shape pairs (as a CLIP CLS token summarises the whole image), existence is
/// reading one token. Measured: the CLS token reads the pairs at 0.998, and the experts still
/// answer at chance unless existence dominates their data (docs/demo.md, "A CLS token that
/// knows what is in the image"), so the `small` preset leaves it off.
struct Heads {
    tower: ClipVisionTransformer,
    head: nn::Linear,
    split: (i64, i64, i64),
    position: bool,
    presence: Option<nn::Linear>,
}

/// The heads' logits: per patch `[N, 9, classes]` for shape, colour, size and cell; per image
/// `[N, colours × shapes]` for presence (`None` without the presence head).
struct Logits {
    shape: Tensor,
    colour: Tensor,
    size: Tensor,
    cell: Tensor,
    presence: Option<Tensor>,
}

impl Heads {
    fn forward(&self, px: &Tensor) -> Logits {
        let f = self.tower.features(px, -1, SelectFeature::ClsPatch);
        let y = self.head.forward(&f.narrow(1, 1, f.size()[1] - 1));
        let (a, b, c) = self.split;
        let d = if self.position { y.narrow(2, a + b + c, 9) } else { y.narrow(2, a + b + c, 0) };
        let presence = self.presence.as_ref().map(|h| h.forward(&f.select(1, 0)));
        Logits { shape: y.narrow(2, 0, a), colour: y.narrow(2, a, b), size: y.narrow(2, a + b, c), cell: d, presence }
    }
}

/// The cell index of every patch token, `[n, 9]`.
fn cells(n: i64) -> Tensor {
    Tensor::arange(9, (Kind::Int64, Device::Cpu)).unsqueeze(0).expand([n, 9], false)
}

fn ce(logits: &Tensor, target: &Tensor) -> Tensor {
    let k = logits.size()[2];
    logits.reshape([-1, k]).cross_entropy_loss::<Tensor>(&target.reshape([-1]), None, Reduction::Mean, -100, 0.0)
}

fn accuracy(logits: &Tensor, target: &Tensor) -> f64 {
    let pred = logits.argmax(2, false);
    let valid = target.ne(-100);
    let right = pred.eq_tensor(target).logical_and(&valid).sum(Kind::Float).double_value(&[]);
    right / valid.sum(Kind::Float).double_value(&[]).max(1.0)
}

/// Train the tower on the `train` scenes, measure it on the `held_out` scenes, and save it to
/// `out` as a `CLIPVisionModel` checkpoint (plus `tower_report.json`).
pub fn train(world_dir: &Path, world: &WorldConfig, scenes: &SceneIndex, train: &[String], held_out: &[String], spec: &TowerSpec, seed: u64, out: &Path) -> Result<TowerReport> {
    let size = world.image_size as i64;
    if size % 3 != 0 {
        return Err(DemoError::Config(format!("stage 0 needs an image size divisible by 3 (one patch per grid cell), got {size}")));
    }
    let vcfg = vision_config(spec.hidden, spec.layers, size);
    let proc = ImageProcessor::clip(world.image_size, mllm::config::AspectRatio::Pad);
    let (px, y) = batch_of(world_dir, world, scenes, train, &proc)?;
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let split = classes(world);
    let random = mllm::checkpoint::Weights::random();
    let m = Heads {
        tower: ClipVisionTransformer::new(&(&mllm::checkpoint::VarBuilder::new(&vs, &random) / "vision_model"), &vcfg),
        head: nn::linear(vs.root() / "cell_head", spec.hidden, split.0 + split.1 + split.2 + if spec.position { 9 } else { 0 }, Default::default()),
        split,
        position: spec.position,
        presence: spec.presence.then(|| nn::linear(vs.root() / "presence_head", spec.hidden, (world.n_colours * world.n_shapes) as i64, Default::default())),
    };
    let mut opt = nn::AdamW::default().build(&vs, spec.lr).map_err(mllm::MllmError::from)?;
    let mut rng = Rng::keyed(&[seed, 0x70_77e5]);
    let n = train.len();
    let pb = super::progress_bar(spec.steps as u64, "stage 0: vision tower");
    let mut last = f64::NAN;
    for step in 0..spec.steps {
        // Cosine decay after a 5% warm-up.
        let warm = (spec.steps / 20).max(1);
        let lr = if step < warm {
            spec.lr * (step + 1) as f64 / warm as f64
        } else {
            let t = (step - warm) as f64 / (spec.steps - warm).max(1) as f64;
            spec.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        };
        opt.set_lr(lr);
        let idx: Vec<i64> = (0..spec.batch_size).map(|_| rng.below(n) as i64).collect();
        let idx = Tensor::from_slice(&idx);
        let z = m.forward(&px.index_select(0, &idx));
        let mut loss = ce(&z.shape, &y.shape.index_select(0, &idx))
            + ce(&z.colour, &y.colour.index_select(0, &idx))
            + ce(&z.size, &y.size.index_select(0, &idx));
        if spec.position {
            loss = loss + ce(&z.cell, &cells(spec.batch_size as i64));
        }
        if let Some(p) = &z.presence {
            // Summed over the pairs (a mean would weigh each pair 1/32 of a cell head).
            let target = y.presence.index_select(0, &idx);
            loss = loss + p.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Sum) / spec.batch_size as f64;
        }
        opt.backward_step(&loss);
        last = loss.double_value(&[]);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (hpx, h) = batch_of(world_dir, world, scenes, held_out, &proc)?;
    let (hsh, hco, hsi) = (&h.shape, &h.colour, &h.size);
    let report = tch::no_grad(|| {
        let z = m.forward(&hpx);
        let (a, b, c, d) = (&z.shape, &z.colour, &z.size, &z.cell);
        // 1 where the CLS token reads a colour-shape pair right, `[N, pairs]`.
        let presence_right = z.presence.as_ref().map(|p| p.gt(0.0).eq_tensor(&h.presence.gt(0.5)).to_kind(Kind::Float));
        let occ_pred = a.argmax(2, false).ne(0);
        let occ = occ_pred.eq_tensor(&hsh.ne(0)).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        let occupied = hsh.ne(0);
        let all = a
            .argmax(2, false)
            .eq_tensor(hsh)
            .logical_and(&b.argmax(2, false).eq_tensor(hco))
            .logical_and(&c.argmax(2, false).eq_tensor(hsi))
            .logical_and(&occupied)
            .sum(Kind::Float)
            .double_value(&[])
            / occupied.sum(Kind::Float).double_value(&[]).max(1.0);
        TowerReport {
            train_images: train.len(),
            held_out_images: held_out.len(),
            occupancy: occ,
            shape: accuracy(a, hsh),
            colour: accuracy(b, hco),
            size: accuracy(c, hsi),
            all_attributes: all,
            position: spec.position.then(|| accuracy(d, &cells(held_out.len() as i64))),
            presence: presence_right.as_ref().map(|r| r.mean(Kind::Float).double_value(&[])),
            presence_images: presence_right.as_ref().map(|r| r.min_dim(1, false).0.mean(Kind::Float).double_value(&[])),
            final_loss: last,
        }
    });
    save(&vs, &vcfg, world.image_size, out)?;
    write_json(&out.join("tower_report.json"), &report)?;
    Ok(report)
}

/// Write the tower's weights (`vision_model.*`) and configs as a `CLIPVisionModel` directory.
fn save(vs: &nn::VarStore, vcfg: &ClipVisionConfig, image_size: u32, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut named: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(n, _)| n.starts_with("vision_model.")).map(|(n, t)| (n, t.detach())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = out.join("model.safetensors.tmp");
    Tensor::write_safetensors(&named, &tmp).map_err(mllm::MllmError::from)?;
    std::fs::rename(&tmp, out.join(WEIGHTS)).map_err(io_err(out))?;
    let mut cfg = serde_json::to_value(vcfg).map_err(|source| DemoError::Json { path: out.join("config.json"), source })?;
    cfg["architectures"] = serde_json::json!(["CLIPVisionModel"]);
    cfg["model_type"] = serde_json::json!("clip_vision_model");
    cfg["projection_dim"] = serde_json::json!(vcfg.hidden_size);
    cfg["torch_dtype"] = serde_json::json!("float32");
    write_json(&out.join("config.json"), &cfg)?;
    write_json(&out.join("preprocessor_config.json"), &super::checkpoint::preprocessor_config(image_size))
}

/// Copy the tower saved in `dir` into `llava`'s vision tower (names `vision_tower.<key>`); every
/// tower weight must be present with the same shape.
pub fn load_into(llava: &mllm::llava::Llava, dir: &Path) -> Result<()> {
    let file = dir.join(WEIGHTS);
    let src = mllm::checkpoint::read_all(&file)?;
    let mut copied = 0;
    for (name, t) in llava.var_store().variables() {
        let Some(key) = name.strip_prefix("vision_tower.") else { continue };
        let s = src.get(key).ok_or_else(|| DemoError::Config(format!("{}: no tensor `{key}` for the expert's vision tower", file.display())))?;
        if s.size() != t.size() {
            return Err(DemoError::Config(format!("{}: `{key}` has shape {:?}, the expert's is {:?}", file.display(), s.size(), t.size())));
        }
        tch::no_grad(|| {
            let mut t = t;
            t.copy_(s);
        });
        copied += 1;
    }
    if copied != src.len() {
        return Err(DemoError::Config(format!("{}: {} tensors, the expert's tower has {copied}", file.display(), src.len())));
    }
    Ok(())
}
