//! The CLIP image processor (HF `CLIPImageProcessor`, PIL backend) and LLaVA's pad-to-square.
//!
//! Resizing reimplements Pillow's `Image.resize(…, BICUBIC)` exactly (Pillow `Resample.c`): a
//! separable convolution with the cubic kernel (a = −0.5, support 2) widened by the scale factor
//! when downscaling (antialiasing), 22-bit fixed-point coefficients, the horizontal pass first,
//! and rounding/clamping to 8 bits after each pass.
use crate::config::AspectRatio;
use crate::error::{MllmError, Result};
use image::RgbImage;
use serde::Deserialize;
use std::path::Path;
use tch::Tensor;

/// OpenAI CLIP's normalisation mean.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's normalisation std.
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The largest intermediate image, in pixels, preprocessing may build (about 800 MB of RGB; the
/// same bound as `amp_io::image_check::MAX_PIXELS` on decoded images).
pub const MAX_WORK_PIXELS: u64 = 1 << 28;

/// `preprocessor_config.json` (the fields the CLIP processor uses).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub shortest_edge: u32,
    pub crop_height: u32,
    pub crop_width: u32,
    pub do_resize: bool,
    pub do_center_crop: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// LLaVA's `image_aspect_ratio`.
    pub aspect_ratio: AspectRatio,
}

#[derive(Deserialize)]
struct RawSize {
    shortest_edge: Option<u32>,
    height: Option<u32>,
    width: Option<u32>,
}

#[derive(Deserialize)]
struct RawConfig {
    size: Option<serde_json::Value>,
    crop_size: Option<serde_json::Value>,
    do_resize: Option<bool>,
    do_center_crop: Option<bool>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<[f64; 3]>,
    image_std: Option<[f64; 3]>,
    resample: Option<u32>,
    do_pad: Option<bool>,
}

fn parse_size(v: &serde_json::Value) -> Option<RawSize> {
    if let Some(n) = v.as_u64() {
        return Some(RawSize { shortest_edge: Some(n as u32), height: Some(n as u32), width: Some(n as u32) });
    }
    serde_json::from_value(v.clone()).ok()
}

impl ImageProcessor {
    /// The CLIP processor for `image_size` px (shortest edge and crop both `image_size`).
    pub fn clip(image_size: u32, aspect_ratio: AspectRatio) -> Self {
        Self {
            shortest_edge: image_size,
            crop_height: image_size,
            crop_width: image_size,
            do_resize: true,
            do_center_crop: true,
            do_rescale: true,
            rescale_factor: 1. / 255.,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            aspect_ratio,
        }
    }

    /// Read `preprocessor_config.json` from `dir` if present, else [`Self::clip`] with `image_size`.
    /// A `do_pad` entry there overrides `aspect_ratio`.
    pub fn from_dir(dir: &Path, image_size: u32, aspect_ratio: AspectRatio) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let mut p = Self::clip(image_size, aspect_ratio);
        if !path.exists() {
            return Ok(p);
        }
        let s = std::fs::read_to_string(&path).map_err(|source| MllmError::Io { path: path.clone(), source })?;
        let raw: RawConfig = serde_json::from_str(&s).map_err(|source| MllmError::Json { path: path.clone(), source })?;
        let cerr = |m: String| MllmError::Config { path: path.clone(), message: m };
        if let Some(r) = raw.resample {
            if r != 3 {
                return Err(cerr(format!("resample {r} is not supported (only 3 = bicubic)")));
            }
        }
        if let Some(v) = raw.size.as_ref().and_then(parse_size) {
            p.shortest_edge = v.shortest_edge.ok_or_else(|| cerr("`size` must give `shortest_edge`".into()))?;
        }
        if let Some(v) = raw.crop_size.as_ref().and_then(parse_size) {
            p.crop_height = v.height.ok_or_else(|| cerr("`crop_size.height` missing".into()))?;
            p.crop_width = v.width.ok_or_else(|| cerr("`crop_size.width` missing".into()))?;
        }
        p.do_resize = raw.do_resize.unwrap_or(true);
        p.do_center_crop = raw.do_center_crop.unwrap_or(true);
        p.do_rescale = raw.do_rescale.unwrap_or(true);
        p.rescale_factor = raw.rescale_factor.unwrap_or(1. / 255.);
        p.do_normalize = raw.do_normalize.unwrap_or(true);
        p.image_mean = raw.image_mean.unwrap_or(CLIP_MEAN);
        p.image_std = raw.image_std.unwrap_or(CLIP_STD);
        // llava-hf's `LlavaImageProcessor` states pad-to-square explicitly.
        match raw.do_pad {
            Some(true) => p.aspect_ratio = AspectRatio::Pad,
            Some(false) => p.aspect_ratio = AspectRatio::Square,
            None => {}
        }
        Ok(p)
    }

    /// A fingerprint of the settings (for reference-log-prob cache keys).
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }

    /// Decode an image file to RGB; errors name the file.
    pub fn open(path: &Path) -> Result<RgbImage> {
        let img = image::open(path).map_err(|e| MllmError::Image { path: path.into(), message: e.to_string() })?;
        Ok(img.to_rgb8())
    }

    /// Load and preprocess a file: `[3, H, W]` f32. Sizes are checked first
    /// ([`Self::check_dimensions`]).
    pub fn preprocess_file(&self, path: &Path) -> Result<Tensor> {
        let img = Self::open(path)?;
        let (w, h) = img.dimensions();
        self.check_dimensions(|| format!("image {}", path.display()), w, h)?;
        Ok(self.preprocess(&img))
    }

    /// Refuses a `w × h` image with a zero side, or whose preprocessing would build an image of
    /// more than [`MAX_WORK_PIXELS`] (LLaVA's padded square, or the resized image: an extreme
    /// aspect ratio resized to `shortest_edge` grows its long side), before anything is allocated.
    pub fn check_dimensions(&self, what: impl FnOnce() -> String, w: u32, h: u32) -> Result<()> {
        let refuse = |m: String| Err(MllmError::Input(format!("{}: {w}x{h} pixels: {m}", what())));
        if w == 0 || h == 0 {
            return refuse("an image side is 0".into());
        }
        let (w, h) = match self.aspect_ratio {
            AspectRatio::Pad => {
                let s = u64::from(w.max(h));
                if s * s > MAX_WORK_PIXELS {
                    return refuse(format!("padded to a {s}x{s} square it exceeds {MAX_WORK_PIXELS} pixels"));
                }
                (s, s)
            }
            AspectRatio::Square => (u64::from(w), u64::from(h)),
        };
        if self.do_resize {
            let (short, long) = (w.min(h), w.max(h));
            let new_long = u64::from(self.shortest_edge) * long / short;
            if new_long.saturating_mul(u64::from(self.shortest_edge)) > MAX_WORK_PIXELS {
                return refuse(format!(
                    "resized to a shortest edge of {} it would be {new_long} pixels long (more than {MAX_WORK_PIXELS} pixels)",
                    self.shortest_edge
                ));
            }
        }
        Ok(())
    }

    /// LLaVA pad-to-square (if configured), resize, center crop, rescale, normalize → `[3, H, W]`.
    pub fn preprocess(&self, img: &RgbImage) -> Tensor {
        let img = match self.aspect_ratio {
            AspectRatio::Pad => {
                let bg = self.image_mean.map(|m| (m * 255.) as u8);
                expand_to_square(img, bg)
            }
            AspectRatio::Square => img.clone(),
        };
        let img = if self.do_resize {
            let (w, h) = img.dimensions();
            let (short, long) = (w.min(h), w.max(h));
            let new_long = (self.shortest_edge as f64 * long as f64 / short as f64) as u32;
            let (nw, nh) = if w <= h { (self.shortest_edge, new_long) } else { (new_long, self.shortest_edge) };
            resize_bicubic(&img, nw, nh)
        } else {
            img
        };
        let img = if self.do_center_crop { center_crop(&img, self.crop_width, self.crop_height) } else { img };
        let (w, h) = img.dimensions();
        let mut data = vec![0f32; (3 * w * h) as usize];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                let mut v = p[c] as f64;
                if self.do_rescale {
                    v *= self.rescale_factor;
                }
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                data[(c as u32 * w * h + y * w + x) as usize] = v as f32;
            }
        }
        Tensor::from_slice(&data).view([3, h as i64, w as i64])
    }
}

/// LLaVA's `expand2square`: paste the image centered on a square of colour `bg`.
pub fn expand_to_square(img: &RgbImage, bg: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let s = w.max(h);
    let mut out = RgbImage::from_pixel(s, s, image::Rgb(bg));
    let (ox, oy) = if w > h { (0, (w - h) / 2) } else { ((h - w) / 2, 0) };
    image::imageops::replace(&mut out, img, ox as i64, oy as i64);
    out
}

/// HF `center_crop`: crop (or zero-pad) to `cw × ch` around the centre.
pub fn center_crop(img: &RgbImage, cw: u32, ch: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w >= cw && h >= ch {
        let top = (h - ch) / 2;
        let left = (w - cw) / 2;
        return image::imageops::crop_imm(img, left, top, cw, ch).to_image();
    }
    // HF pads with zeros and then crops.
    let pw = w.max(cw);
    let ph = h.max(ch);
    let mut padded = RgbImage::new(pw, ph);
    image::imageops::replace(&mut padded, img, ((pw - w) / 2) as i64, ((ph - h) / 2) as i64);
    center_crop(&padded, cw, ch)
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1. {
        ((A + 2.) * x - (A + 3.)) * x * x + 1.
    } else if x < 2. {
        (((x - 5.) * x + 8.) * x - 4.) * A
    } else {
        0.
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first input index
/// and the fixed-point weights.
fn coeffs(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.);
    let support = 2. * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1. / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let mut k: Vec<f64> = (0..xmax).map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
            let ww: f64 = k.iter().sum();
            if ww != 0. {
                for v in &mut k {
                    *v /= ww;
                }
            }
            let one = (1i64 << PRECISION_BITS) as f64;
            let kk = k.iter().map(|&v| if v < 0. { (-0.5 + v * one).trunc() as i64 } else { (0.5 + v * one).trunc() as i64 }).collect();
            (xmin as usize, kk)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow-exact bicubic resize of an RGB image.
pub fn resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let round = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass.
    let tmp = if out_w != w {
        let cx = coeffs(w, out_w);
        let mut t = RgbImage::new(out_w, h);
        for y in 0..h {
            for (xx, (xmin, k)) in cx.iter().enumerate() {
                let mut acc = [round; 3];
                for (i, &kv) in k.iter().enumerate() {
                    let p = img.get_pixel((xmin + i) as u32, y);
                    for c in 0..3 {
                        acc[c] += p[c] as i64 * kv;
                    }
                }
                t.put_pixel(xx as u32, y, image::Rgb(acc.map(clip8)));
            }
        }
        t
    } else {
        img.clone()
    };
    if out_h == h {
        return tmp;
    }
    let cy = coeffs(h, out_h);
    let mut out = RgbImage::new(out_w, out_h);
    for (yy, (ymin, k)) in cy.iter().enumerate() {
        for x in 0..out_w {
            let mut acc = [round; 3];
            for (i, &kv) in k.iter().enumerate() {
                let p = tmp.get_pixel(x, (ymin + i) as u32);
                for c in 0..3 {
                    acc[c] += p[c] as i64 * kv;
                }
            }
            out.put_pixel(x, yy as u32, image::Rgb(acc.map(clip8)));
        }
    }
    out
}
