//! The world as datasets on disk, in the real formats:
//!
//! ```text
//! <root>/world.json                      manifest: the WorldConfig and file list
//! <root>/images/<id>.png                 every scene's image (RGB PNG)
//! <root>/scenes.json                     ground truth: every Scene (scene graph), all splits
//! <root>/train.json                      LLaVA instruction data [{id, image, conversations}]
//! <root>/pref.json                       preference prompts with standard responses (same format)
//! <root>/eval_gt.json                    MRHal-Bench style [{id, image, image_content, label, revised}]
//! <root>/pope/coco_pope_<split>.json     POPE JSON lines {question_id, image, text, label}
//! <root>/tokenizer.json                  byte-level BPE trained on all of the above
//! ```
//!
//! `image` fields are file names relative to `<root>/images/` (LLaVA's `image_folder`
//! convention). Generation is deterministic: the same config gives byte-identical files.
//! Writing is resumable: existing images are kept, files are written atomically, and a
//! directory holding another config is refused.
use crate::config::WorldConfig;
use crate::error::{io_err, Result, WorldError};
use crate::pope::{pope_splits, PopeRecord};
use crate::render::{png_bytes, render};
use crate::rng::Rng;
use crate::scene::Scene;
use crate::text::{description_conversation, dialogue, Turn};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Stage-1 caption data of a canonical world (`<root>/captions.json`, LLaVA format).
pub const CAPTIONS: &str = "captions.json";

/// Which part of the world a scene belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Instruction tuning (expert SFT).
    Train,
    /// Preference prompts (MEG / IG input) with standard responses.
    Pref,
    /// MRHal-style benchmark.
    Bench,
    /// POPE probes.
    Pope,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Pref, Split::Bench, Split::Pope];
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Pref => "pref",
            Split::Bench => "bench",
            Split::Pope => "pope",
        }
    }
    fn code(self) -> u64 {
        self as u64 + 1
    }
}

/// One LLaVA instruction record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstructionRecord {
    pub id: String,
    pub image: String,
    pub conversations: Vec<Turn>,
}

/// One MRHal-Bench `eval_gt.json` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    pub id: String,
    pub image: String,
    /// One "size colour shape in the cell" per object (the judge's visual content).
    pub image_content: Vec<String>,
    /// Category of each round ("attribute", "description", "existence", "counting",
    /// "reasoning", "relation").
    pub label: Vec<String>,
    /// The standard dialogue: alternating human / gpt turns, `<image>` in the first.
    pub revised: Vec<Turn>,
}

/// A generator for one [`WorldConfig`]; every method is a pure function of the config.
#[derive(Debug, Clone)]
pub struct World {
    pub config: WorldConfig,
}

impl World {
    /// Validate the config.
    pub fn new(config: WorldConfig) -> Result<Self> {
        config.validate()?;
        Ok(World { config })
    }

    /// The configuration.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// Number of scenes of a split.
    pub fn len(&self, split: Split) -> usize {
        match split {
            Split::Train => self.config.n_train,
            Split::Pref => self.config.n_pref,
            Split::Bench => self.config.n_bench,
            Split::Pope => self.config.n_pope,
        }
    }

    /// The id of scene `index` of `split`, e.g. `"train_000042"`.
    pub fn id(split: Split, index: usize) -> String {
        format!("{}_{index:06}", split.name())
    }

    /// Image file name of a scene id.
    pub fn image_name(id: &str) -> String {
        format!("{id}.png")
    }

    /// Scene `index` of `split`.
    pub fn scene(&self, split: Split, index: usize) -> Scene {
        let mut rng = Rng::keyed(&[self.config.seed, split.code(), index as u64, 0]);
        Scene::sample(Self::id(split, index), &self.config.scene_spec(), &mut rng)
    }

    /// All scenes of a split, in index order.
    pub fn scenes(&self, split: Split) -> Vec<Scene> {
        (0..self.len(split))
            .into_par_iter()
            .map(|i| self.scene(split, i))
            .collect()
    }

    fn text_rng(&self, scene: &Scene, salt: u64) -> Rng {
        // Scene ids are unique; hash the id bytes into the stream key.
        let mut h = 0xCBF2_9CE4_8422_2325u64;
        for b in scene.id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
        Rng::keyed(&[self.config.seed, h, salt])
    }

    /// The standard conversation for a train/pref scene: a detailed description (with
    /// probability `description_fraction`) or a multi-round dialogue.
    pub fn conversation(&self, scene: &Scene) -> Vec<Turn> {
        let mut rng = self.text_rng(scene, 1);
        if self.config.canonical {
            return if rng.chance(self.config.description_fraction) {
                crate::canonical::caption_conversation(scene)
            } else {
                let rounds = rng.range(self.config.min_rounds, self.config.max_rounds);
                let g = self.config.grounded_fraction;
                crate::canonical::dialogue(scene, rounds, g, self.config.existence_share, &self.config.vocab(), &mut rng).0
            };
        }
        if rng.chance(self.config.description_fraction) {
            description_conversation(scene, &mut rng)
        } else {
            let rounds = rng.range(self.config.min_rounds, self.config.max_rounds);
            dialogue(scene, rounds, &self.config.vocab(), &mut rng).0
        }
    }

    /// An instruction record for a scene.
    pub fn instruction_record(&self, scene: &Scene) -> InstructionRecord {
        InstructionRecord {
            id: scene.id.clone(),
            image: Self::image_name(&scene.id),
            conversations: self.conversation(scene),
        }
    }

    /// The MRHal-style benchmark record for a scene.
    pub fn bench_record(&self, scene: &Scene) -> BenchRecord {
        let mut rng = self.text_rng(scene, 2);
        let rounds = rng.range(self.config.min_rounds, self.config.max_rounds);
        let (revised, cats) = if self.config.canonical {
            // The six MRHal categories, canonically phrased (no extra grounded rounds).
            crate::canonical::dialogue(scene, rounds, 0.0, self.config.existence_share, &self.config.vocab(), &mut rng)
        } else {
            dialogue(scene, rounds, &self.config.vocab(), &mut rng)
        };
        BenchRecord {
            id: scene.id.clone(),
            image: Self::image_name(&scene.id),
            image_content: scene.image_content(),
            label: cats.iter().map(|c| c.name().to_string()).collect(),
            revised,
        }
    }

    /// POPE splits `(split name, records)` over the pope scenes.
    pub fn pope(&self, scenes: &[Scene]) -> Vec<(String, Vec<PopeRecord>)> {
        let v = self.config.vocab();
        pope_splits(scenes, &v.colours, &v.shapes, v.objects, self.config.seed, |s| {
            Self::image_name(&s.id)
        })
    }

    /// Generate everything under `root` (see the module docs) and return the manifest.
    pub fn write(&self, root: &Path) -> Result<Manifest> {
        let manifest_path = root.join("world.json");
        if manifest_path.exists() {
            let old: Manifest = read_json(&manifest_path)?;
            if old.config != self.config {
                return Err(WorldError::ConfigMismatch {
                    path: manifest_path,
                });
            }
        }
        let images = root.join("images");
        std::fs::create_dir_all(&images).map_err(io_err(&images))?;
        std::fs::create_dir_all(root.join("pope")).map_err(io_err(root.join("pope")))?;

        let mut all = Vec::new();
        for split in Split::ALL {
            all.extend(self.scenes(split));
        }
        // Images: skip those already written (an interrupted run resumes).
        all.par_iter().try_for_each(|s| -> Result<()> {
            let path = images.join(Self::image_name(&s.id));
            if path.exists() {
                return Ok(());
            }
            let bytes = png_bytes(&render(s, self.config.anti_alias)).map_err(|source| {
                WorldError::Image {
                    path: path.clone(),
                    source,
                }
            })?;
            write_atomic(&path, &bytes)
        })?;
        write_json(&root.join("scenes.json"), &all)?;

        let by_split = |sp: Split| {
            all.iter()
                .filter(move |s| s.id.starts_with(&format!("{}_", sp.name())))
        };
        let train: Vec<InstructionRecord> = by_split(Split::Train)
            .collect::<Vec<_>>()
            .par_iter()
            .map(|s| self.instruction_record(s))
            .collect();
        let pref: Vec<InstructionRecord> = by_split(Split::Pref)
            .collect::<Vec<_>>()
            .par_iter()
            .map(|s| self.instruction_record(s))
            .collect();
        let bench: Vec<BenchRecord> = by_split(Split::Bench)
            .map(|s| self.bench_record(s))
            .collect();
        let pope_scenes: Vec<Scene> = by_split(Split::Pope).cloned().collect();
        let pope = self.pope(&pope_scenes);
        write_json(&root.join("train.json"), &train)?;
        if self.config.canonical {
            // Stage-1 (projector alignment) data: the caption of every train scene.
            let captions: Vec<InstructionRecord> = by_split(Split::Train)
                .map(|s| InstructionRecord {
                    id: s.id.clone(),
                    image: Self::image_name(&s.id),
                    conversations: crate::canonical::caption_conversation(s),
                })
                .collect();
            write_json(&root.join(CAPTIONS), &captions)?;
        }
        write_json(&root.join("pref.json"), &pref)?;
        write_json(&root.join("eval_gt.json"), &bench)?;
        let mut pope_files = Vec::new();
        let mut corpus: Vec<String> = Vec::new();
        for (name, recs) in &pope {
            let rel = format!("pope/coco_pope_{name}.json");
            let mut buf = String::new();
            for r in recs {
                buf.push_str(&serde_json::to_string(r).expect("serialisable"));
                buf.push('\n');
                if name == "random" {
                    corpus.push(r.text.clone());
                }
            }
            write_atomic(&root.join(&rel), buf.as_bytes())?;
            pope_files.push(rel);
        }
        for r in train.iter().chain(&pref) {
            corpus.extend(r.conversations.iter().map(|t| t.value.clone()));
        }
        for r in &bench {
            corpus.extend(r.revised.iter().map(|t| t.value.clone()));
        }
        let tok = crate::tokenizer::train_tokenizer(&corpus, self.config.vocab_size)?;
        let tok_json = crate::tokenizer::tokenizer_json(&tok)?;
        write_atomic(&root.join("tokenizer.json"), tok_json.as_bytes())?;

        let manifest = Manifest {
            config: self.config.clone(),
            counts: Split::ALL
                .iter()
                .map(|s| (s.name().to_string(), self.len(*s)))
                .collect(),
            vocab_size: tok.get_vocab_size(true),
            files: Files {
                images: "images".into(),
                scenes: "scenes.json".into(),
                train: "train.json".into(),
                pref: "pref.json".into(),
                eval_gt: "eval_gt.json".into(),
                pope: pope_files,
                tokenizer: "tokenizer.json".into(),
            },
        };
        write_json(&manifest_path, &manifest)?;
        Ok(manifest)
    }
}

/// File names of a written world, relative to its root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Files {
    pub images: String,
    pub scenes: String,
    pub train: String,
    pub pref: String,
    pub eval_gt: String,
    pub pope: Vec<String>,
    pub tokenizer: String,
}

/// `world.json`: what was generated and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub config: WorldConfig,
    /// Scenes per split, in `Split::ALL` order.
    pub counts: Vec<(String, usize)>,
    /// Tokenizer vocabulary size (with special tokens).
    pub vocab_size: usize,
    pub files: Files,
}

/// Ground-truth scenes of a written world, by id and by image file name.
#[derive(Debug, Clone)]
pub struct SceneIndex {
    pub scenes: Vec<Scene>,
    by_key: HashMap<String, usize>,
}

impl SceneIndex {
    /// Load `<root>/scenes.json`.
    pub fn open(root: &Path) -> Result<Self> {
        let scenes: Vec<Scene> = read_json(&root.join("scenes.json"))?;
        Ok(Self::new(scenes))
    }
    pub fn new(scenes: Vec<Scene>) -> Self {
        let mut by_key = HashMap::new();
        for (i, s) in scenes.iter().enumerate() {
            by_key.insert(s.id.clone(), i);
            by_key.insert(World::image_name(&s.id), i);
        }
        SceneIndex { scenes, by_key }
    }
    /// A scene by id (`"bench_000003"`), image file name (`"bench_000003.png"`) or any path
    /// ending in that file name.
    pub fn get(&self, key: &str) -> Option<&Scene> {
        let name = Path::new(key)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(key);
        self.by_key
            .get(key)
            .or_else(|| self.by_key.get(name))
            .map(|&i| &self.scenes[i])
    }
}

/// Write bytes to `path` atomically (temporary file + rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Serialise `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).map_err(|source| WorldError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, s.as_bytes())
}

/// Read a JSON file, naming the file in errors.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&s).map_err(|source| WorldError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Read a POPE JSON-lines file, naming the file and line in errors.
pub fn read_pope(path: &Path) -> Result<Vec<PopeRecord>> {
    let s = std::fs::read_to_string(path).map_err(io_err(path))?;
    s.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| WorldError::Json {
                path: PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                source,
            })
        })
        .collect()
}
