//! Drawing a [`Scene`] into an RGB image (supersampled anti-aliasing, integer blending, so the
//! pixels are identical on every platform).
use crate::scene::{Object, Scene, Shape};
use image::RgbImage;

/// Background colour (dark gray): every object colour, white included, contrasts with it.
pub const BACKGROUND: [u8; 3] = [64, 64, 64];

/// Whether the point `(dx, dy)`, in units of the object's radius from its centre (y down),
/// lies inside `shape`.
pub fn inside(shape: Shape, dx: f64, dy: f64) -> bool {
    match shape {
        Shape::Circle => dx * dx + dy * dy <= 1.0,
        Shape::Square => dx.abs() <= 0.8 && dy.abs() <= 0.8,
        Shape::Diamond => dx.abs() + dy.abs() <= 1.0,
        // Upward triangle: apex at dy = -0.95, base at dy = 0.8, base half-width 1.0.
        Shape::Triangle => (-0.95..=0.8).contains(&dy) && dx.abs() <= (dy + 0.95) / 1.75,
        Shape::Cross => {
            (dx.abs() <= 0.32 && dy.abs() <= 0.95) || (dy.abs() <= 0.32 && dx.abs() <= 0.95)
        }
        Shape::Ring => {
            let d = dx * dx + dy * dy;
            (0.3025..=1.0).contains(&d)
        }
    }
}

fn draw_object(img: &mut RgbImage, o: &Object, ss: u32) {
    let (w, h) = img.dimensions();
    let x0 = (o.cx - o.r - 1.0).floor().max(0.0) as u32;
    let y0 = (o.cy - o.r - 1.0).floor().max(0.0) as u32;
    let x1 = ((o.cx + o.r + 1.0).ceil() as u32).min(w);
    let y1 = ((o.cy + o.r + 1.0).ceil() as u32).min(h);
    let n = ss * ss;
    let fill = o.colour.rgb();
    for py in y0..y1 {
        for px in x0..x1 {
            let mut k = 0u32;
            for sy in 0..ss {
                for sx in 0..ss {
                    let x = px as f64 + (sx as f64 + 0.5) / ss as f64;
                    let y = py as f64 + (sy as f64 + 0.5) / ss as f64;
                    if inside(o.shape, (x - o.cx) / o.r, (y - o.cy) / o.r) {
                        k += 1;
                    }
                }
            }
            if k > 0 {
                let p = img.get_pixel_mut(px, py);
                for (ch, f) in p.0.iter_mut().zip(fill) {
                    *ch = ((*ch as u32 * (n - k) + f as u32 * k + n / 2) / n) as u8;
                }
            }
        }
    }
}

/// Render `scene`; `anti_alias` uses 4x4 supersampling, otherwise one sample per pixel.
pub fn render(scene: &Scene, anti_alias: bool) -> RgbImage {
    let s = scene.image_size;
    let mut img = RgbImage::from_pixel(s, s, image::Rgb(BACKGROUND));
    let ss = if anti_alias { 4 } else { 1 };
    for o in &scene.objects {
        draw_object(&mut img, o, ss);
    }
    img
}

/// Encode an image as PNG bytes (deterministic for a given `image` version).
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)?;
    Ok(buf.into_inner())
}
