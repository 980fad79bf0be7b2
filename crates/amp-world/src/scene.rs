//! The scene graph: ground truth of one image (objects with shape, colour, size and grid cell).
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Object shapes, in the order presets take them (`n_shapes = 4` uses the first four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
    Ring,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Cross,
        Shape::Ring,
    ];
    /// Singular noun.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Cross => "cross",
            Shape::Ring => "ring",
        }
    }
    /// Plural noun.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Diamond => "diamonds",
            Shape::Cross => "crosses",
            Shape::Ring => "rings",
        }
    }
}

/// Object colours, in the order presets take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    Pink,
    White,
    Brown,
    Cyan,
}

impl Colour {
    pub const ALL: [Colour; 10] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::Pink,
        Colour::White,
        Colour::Brown,
        Colour::Cyan,
    ];
    /// English adjective.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::Pink => "pink",
            Colour::White => "white",
            Colour::Brown => "brown",
            Colour::Cyan => "cyan",
        }
    }
    /// sRGB fill colour.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Green => [40, 180, 60],
            Colour::Blue => [50, 90, 235],
            Colour::Yellow => [240, 220, 40],
            Colour::Purple => [150, 60, 200],
            Colour::Orange => [250, 140, 20],
            Colour::Pink => [250, 150, 210],
            Colour::White => [250, 250, 250],
            Colour::Brown => [130, 80, 30],
            Colour::Cyan => [40, 220, 230],
        }
    }
}

/// Object sizes; a two-size world uses `Small` and `Large`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    /// English adjective.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
    /// The sizes of a world with `n` (2 or 3) sizes.
    pub fn set(n: usize) -> &'static [Size] {
        if n >= 3 {
            &[Size::Small, Size::Medium, Size::Large]
        } else {
            &[Size::Small, Size::Large]
        }
    }
    /// Radius as a fraction of half a grid cell.
    pub fn radius_frac(self) -> f64 {
        match self {
            Size::Small => 0.48,
            Size::Medium => 0.68,
            Size::Large => 0.9,
        }
    }
}

/// Row names of the 3x3 grid.
pub const ROWS: [&str; 3] = ["top", "middle", "bottom"];
/// Column names of the 3x3 grid.
pub const COLS: [&str; 3] = ["left", "middle", "right"];

/// A 3x3 grid cell: `row` 0 = top, `col` 0 = left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cell {
    pub row: u8,
    pub col: u8,
}

impl Cell {
    /// "top left", ..., "center", ..., "bottom right".
    pub fn name(self) -> String {
        if self.row == 1 && self.col == 1 {
            "center".to_string()
        } else {
            format!("{} {}", ROWS[self.row as usize], COLS[self.col as usize])
        }
    }
}

/// One object of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub cell: Cell,
    /// Centre in pixels (inside the cell, jittered).
    pub cx: f64,
    pub cy: f64,
    /// Radius in pixels.
    pub r: f64,
}

impl Object {
    /// "large red circle".
    pub fn name(&self) -> String {
        format!(
            "{} {} {}",
            self.size.name(),
            self.colour.name(),
            self.shape.name()
        )
    }
    /// "large red circle in the top left" (the MRHal `image_content` entry).
    pub fn name_with_cell(&self) -> String {
        format!("{} in the {}", self.name(), self.cell.name())
    }
    /// The (colour, shape) "category" used by POPE probes.
    pub fn category(&self) -> (Colour, Shape) {
        (self.colour, self.shape)
    }
}

/// Ground truth of one image. Objects are sorted in reading order (row-major), one per cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Stable id, e.g. `"train_000042"`; the image file is `images/<id>.png`.
    pub id: String,
    /// Image side in pixels.
    pub image_size: u32,
    pub objects: Vec<Object>,
}

/// What scenes may contain; a sub-set of [`crate::WorldConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneSpec {
    pub image_size: u32,
    pub min_objects: usize,
    pub max_objects: usize,
    pub shapes: Vec<Shape>,
    pub colours: Vec<Colour>,
    pub sizes: Vec<Size>,
    /// Zipf exponent of the shape/colour prior (0 = uniform). A skewed prior makes "popular"
    /// POPE negatives meaningful and gives models frequent objects to hallucinate.
    pub skew: f64,
    /// Fraction of the free space in a cell used to jitter the centre (0 = centred).
    pub jitter: f64,
}

/// Zipf weights (i+1)^-s. Exponents 0, 0.5 and 1 use only correctly rounded operations (exact
/// on every platform); other exponents go through `powf`.
fn zipf(n: usize, s: f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let x = (i + 1) as f64;
            if s == 0.0 {
                1.0
            } else if s == 1.0 {
                1.0 / x
            } else if s == 0.5 {
                1.0 / x.sqrt()
            } else {
                x.powf(-s)
            }
        })
        .collect()
}

impl SceneSpec {
    /// The probability that a scene holds at least one object of each shape (in `shapes`
    /// order): the object count is uniform in `min_objects..=max_objects` and each object's
    /// shape an independent draw from the Zipf prior, as [`Scene::sample`] draws them.
    pub fn shape_presence(&self) -> Vec<f64> {
        let ws = zipf(self.shapes.len(), self.skew);
        let total: f64 = ws.iter().sum();
        let (lo, hi) = (self.min_objects, self.max_objects.min(9));
        ws.iter()
            .map(|w| {
                let absent_one = 1.0 - w / total;
                let mut sum = 0.0;
                for n in lo..=hi {
                    let mut absent = 1.0;
                    for _ in 0..n {
                        absent *= absent_one;
                    }
                    sum += 1.0 - absent;
                }
                sum / (hi - lo + 1) as f64
            })
            .collect()
    }
}

impl Scene {
    /// Sample a scene from `spec` with `rng`.
    pub fn sample(id: String, spec: &SceneSpec, rng: &mut Rng) -> Scene {
        let n = rng.range(spec.min_objects, spec.max_objects.min(9));
        let mut cells: Vec<Cell> = (0..9u8)
            .map(|i| Cell {
                row: i / 3,
                col: i % 3,
            })
            .collect();
        rng.shuffle(&mut cells);
        let mut cells: Vec<Cell> = cells[..n].to_vec();
        cells.sort();
        let ws = zipf(spec.shapes.len(), spec.skew);
        let wc = zipf(spec.colours.len(), spec.skew);
        let cell_px = spec.image_size as f64 / 3.0;
        let half = cell_px / 2.0;
        let objects = cells
            .into_iter()
            .map(|cell| {
                let shape = spec.shapes[rng.weighted(&ws)];
                let colour = spec.colours[rng.weighted(&wc)];
                let size = *rng.choose(&spec.sizes);
                let r = half * size.radius_frac();
                let free = (half - r).max(0.0) * spec.jitter;
                let cx = cell_px * (cell.col as f64 + 0.5) + (rng.unit() * 2.0 - 1.0) * free;
                let cy = cell_px * (cell.row as f64 + 0.5) + (rng.unit() * 2.0 - 1.0) * free;
                Object {
                    shape,
                    colour,
                    size,
                    cell,
                    cx,
                    cy,
                    r,
                }
            })
            .collect();
        Scene {
            id,
            image_size: spec.image_size,
            objects,
        }
    }

    /// The MRHal-Bench `image_content` list: one "size colour shape in the cell" per object.
    pub fn image_content(&self) -> Vec<String> {
        self.objects.iter().map(Object::name_with_cell).collect()
    }

    /// The object in `cell`, if any.
    pub fn at(&self, cell: Cell) -> Option<&Object> {
        self.objects.iter().find(|o| o.cell == cell)
    }
}

impl Scene {
    /// The scene graph's edges: every ordered pair `(a, rel, b)` of object indices with `a`
    /// left of / right of / above / below `b` (grid cells; derived, not stored).
    pub fn relations(&self) -> Vec<(usize, crate::claims::Rel, usize)> {
        use crate::claims::Rel;
        let mut out = Vec::new();
        for (i, a) in self.objects.iter().enumerate() {
            for (j, b) in self.objects.iter().enumerate() {
                if i == j {
                    continue;
                }
                for (holds, rel) in [
                    (a.cell.col < b.cell.col, Rel::LeftOf),
                    (a.cell.col > b.cell.col, Rel::RightOf),
                    (a.cell.row < b.cell.row, Rel::Above),
                    (a.cell.row > b.cell.row, Rel::Below),
                ] {
                    if holds {
                        out.push((i, rel, j));
                    }
                }
            }
        }
        out
    }
}
