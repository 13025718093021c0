//! Generated miniatures of the seven official dataset layouts (see `layouts`), for tests:
//! the real folder structure, list and annotation files (MAT-files written with
//! `matfile::write_mat`), and a few tiny JPEGs per class of a few classes, with varied
//! sizes and aspect ratios, some grey (L8), optionally one corrupt (truncated) JPEG named
//! by the official lists. CMYK JPEGs are not made: the `image` crate cannot encode them.
//!
//! Each function writes into `root` (the dataset root, created if needed) and returns a
//! [`MiniInfo`] with what `layouts::read` should find.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::matfile::{write_mat, MatValue};

/// What to generate.
#[derive(Debug, Clone)]
pub struct MiniOpts {
    /// Number of classes (at least 1).
    pub classes: usize,
    /// Make every fourth image a grey (L8) JPEG.
    pub grey: bool,
    /// Truncate one listed image (the first of the test split; of `all` for Flowers-102).
    pub corrupt: bool,
    /// Write the MAT-files with compressed elements (as MATLAB's default) or plain.
    pub compress_mat: bool,
}

impl Default for MiniOpts {
    fn default() -> Self {
        MiniOpts {
            classes: 3,
            grey: true,
            corrupt: false,
            compress_mat: true,
        }
    }
}

/// What a miniature holds, as `layouts::read` should report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MiniInfo {
    /// Class names by class id.
    pub classes: Vec<String>,
    /// Per split, in order: the (rel, label) pairs sorted by rel.
    pub splits: Vec<(String, Vec<(String, usize)>)>,
    /// The rel of the truncated JPEG, if any.
    pub corrupt: Option<String>,
    /// The rels of the grey JPEGs.
    pub grey: Vec<String>,
    /// Images on disk that no split uses (Indoor's unlisted images, Caltech-256 extras
    /// and clutter).
    pub unused: Vec<String>,
}

impl MiniInfo {
    /// Images per split.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.splits
            .iter()
            .map(|(s, e)| (s.clone(), e.len()))
            .collect()
    }
}

/// A `resolve` for `layouts::read` over a plain folder: `rel` (or `.`) under `root`.
pub fn resolver(root: &Path) -> impl Fn(&str) -> Option<PathBuf> + '_ {
    move |rel: &str| {
        let p = if rel == "." {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        p.exists().then_some(p)
    }
}

/// Writes JPEGs and records what was written.
struct Maker<'a> {
    root: &'a Path,
    opts: &'a MiniOpts,
    n: usize,
    info: MiniInfo,
    splits: BTreeMap<String, Vec<(String, usize)>>,
    order: Vec<String>,
}

impl<'a> Maker<'a> {
    fn new(root: &'a Path, opts: &'a MiniOpts, splits: &[&str]) -> Self {
        std::fs::create_dir_all(root).expect("create miniature root");
        Maker {
            root,
            opts,
            n: 0,
            info: MiniInfo::default(),
            splits: splits.iter().map(|s| (s.to_string(), Vec::new())).collect(),
            order: splits.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Writes a tiny JPEG at `rel` (size, colour and greyness vary with a counter).
    fn jpeg(&mut self, rel: &str) {
        let i = self.n;
        self.n += 1;
        let (w, h) = (20 + (i * 7) % 41, 20 + (i * 13 + 5) % 41);
        let grey = self.opts.grey && i % 4 == 3;
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create folder");
        let mut bytes = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85);
        if grey {
            let px: Vec<u8> = (0..w * h)
                .map(|p| ((p % w) * 255 / w + i * 37) as u8)
                .collect();
            enc.encode(&px, w as u32, h as u32, image::ExtendedColorType::L8)
                .expect("encode");
            self.info.grey.push(rel.to_string());
        } else {
            let px: Vec<u8> = (0..w * h)
                .flat_map(|p| {
                    let (x, y) = (p % w, p / w);
                    [
                        (x * 255 / w) as u8,
                        (y * 255 / h) as u8,
                        (i * 53 % 256) as u8,
                    ]
                })
                .collect();
            enc.encode(&px, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .expect("encode");
        }
        std::fs::write(&path, bytes).expect("write jpeg");
    }

    /// Records `rel` in `split` with `label`.
    fn put(&mut self, split: &str, rel: &str, label: usize) {
        self.splits
            .get_mut(split)
            .expect("known split")
            .push((rel.to_string(), label));
    }

    /// Truncates the first image (by rel) of `split`, if asked to.
    fn corrupt(&mut self, split: &str) {
        if !self.opts.corrupt {
            return;
        }
        let mut items = self.splits[split].clone();
        items.sort();
        let rel = items[0].0.clone();
        let path = self.root.join(&rel);
        let bytes = std::fs::read(&path).expect("read jpeg");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        self.info.grey.retain(|g| g != &rel);
        self.info.corrupt = Some(rel);
    }

    fn text(&self, rel: &str, text: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create folder");
        std::fs::write(path, text).expect("write text");
    }

    fn mat(&self, rel: &str, vars: &[(&str, &MatValue)]) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create folder");
        write_mat(&path, vars, self.opts.compress_mat).expect("write mat");
    }

    fn finish(mut self, classes: Vec<String>) -> MiniInfo {
        self.info.classes = classes;
        for s in &self.order {
            let mut items = self.splits.remove(s).expect("split");
            items.sort();
            self.info.splits.push((s.clone(), items));
        }
        self.info.grey.sort();
        self.info.unused.sort();
        self.info
    }
}

/// `n` names: the given ones first, then generated from `more(i)`.
fn names(n: usize, given: &[&str], more: impl Fn(usize) -> String) -> Vec<String> {
    (0..n.max(1))
        .map(|i| {
            given
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| more(i))
        })
        .collect()
}

/// MIT Indoor 67: `Images/<class>/*.jpg`, `TrainImages.txt`, `TestImages.txt` (CRLF,
/// unsorted). Per class 3 train, 2 test and 1 image in neither list.
pub fn indoor(root: &Path, opts: &MiniOpts) -> MiniInfo {
    let mut m = Maker::new(root, opts, &["train", "test"]);
    let mut classes = names(
        opts.classes,
        &[
            "kitchen",
            "airport_inside",
            "bakery",
            "winecellar",
            "tv_studio",
        ],
        |i| format!("room{i:02}"),
    );
    let (mut train, mut test) = (String::new(), String::new());
    let sorted = {
        let mut s = classes.clone();
        s.sort();
        s
    };
    for class in &classes {
        let label = sorted.iter().position(|c| c == class).expect("class");
        for k in 0..6 {
            let sub = format!("{class}/{}_{k}.jpg", &class[..3.min(class.len())]);
            let rel = format!("Images/{sub}");
            m.jpeg(&rel);
            match k {
                0..=2 => {
                    train.insert_str(0, &format!("{sub}\r\n"));
                    m.put("train", &rel, label);
                }
                3 | 4 => {
                    test.insert_str(0, &format!("{sub}\r\n"));
                    m.put("test", &rel, label);
                }
                _ => m.info.unused.push(rel),
            }
        }
    }
    m.text("TrainImages.txt", &train);
    m.text("TestImages.txt", &test);
    m.corrupt("test");
    classes.sort();
    m.finish(classes)
}

/// CUB-200-2011: `images/<NNN.Name>/*.jpg`, `images.txt`, `image_class_labels.txt`,
/// `train_test_split.txt`, `classes.txt`. Class c has 3 + c images, alternately train/test.
pub fn cub(root: &Path, opts: &MiniOpts) -> MiniInfo {
    let mut m = Maker::new(root, opts, &["train", "test"]);
    let classes = names(
        opts.classes,
        &[
            "001.Black_footed_Albatross",
            "002.Laysan_Albatross",
            "003.Sooty_Albatross",
            "004.Groove_billed_Ani",
        ],
        |i| format!("{:03}.Bird_{i}", i + 1),
    );
    let (mut images, mut labels, mut split, mut class_list) =
        (String::new(), String::new(), String::new(), String::new());
    let mut id = 0;
    for (c, class) in classes.iter().enumerate() {
        class_list.push_str(&format!("{} {class}\n", c + 1));
        let bird = &class[4..];
        for k in 0..3 + c {
            id += 1;
            let sub = format!("{class}/{bird}_{:04}_{}.jpg", k + 1, 796000 + id);
            let rel = format!("images/{sub}");
            m.jpeg(&rel);
            images.push_str(&format!("{id} {sub}\n"));
            labels.push_str(&format!("{id} {}\n", c + 1));
            let is_train = k % 2 == 0;
            split.push_str(&format!("{id} {}\n", u8::from(is_train)));
            m.put(if is_train { "train" } else { "test" }, &rel, c);
        }
    }
    m.text("images.txt", &images);
    m.text("image_class_labels.txt", &labels);
    m.text("train_test_split.txt", &split);
    m.text("classes.txt", &class_list);
    m.corrupt("test");
    m.finish(classes)
}

/// The annotation struct of Stanford Cars' devkit for (fname, class) pairs.
fn cars_annotations(rows: &[(String, usize)]) -> MatValue {
    let fields: Vec<String> = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let items = rows
        .iter()
        .enumerate()
        .map(|(i, (fname, class))| {
            let mut item = BTreeMap::new();
            for (f, v) in [
                ("bbox_x1", 1.0),
                ("bbox_y1", 2.0),
                ("bbox_x2", 15.0 + i as f64),
                ("bbox_y2", 18.0),
            ] {
                item.insert(f.to_string(), MatValue::row(vec![v]));
            }
            item.insert("class".into(), MatValue::row(vec![*class as f64]));
            item.insert("fname".into(), MatValue::text(fname));
            item
        })
        .collect::<Vec<_>>();
    MatValue::Struct {
        dims: vec![1, items.len()],
        fields,
        items,
    }
}

/// Stanford Cars: `cars_train/NNNNN.jpg`, `cars_test/NNNNN.jpg` (the same file names in
/// both), `devkit/cars_train_annos.mat`, `devkit/cars_test_annos_withlabels.mat`,
/// `devkit/cars_meta.mat`. Per class 3 train, 2 test, classes interleaved.
pub fn cars(root: &Path, opts: &MiniOpts) -> MiniInfo {
    let mut m = Maker::new(root, opts, &["train", "test"]);
    let classes = names(
        opts.classes,
        &[
            "AM General Hummer SUV 2000",
            "Acura RL Sedan 2012",
            "Acura TL Sedan 2012",
            "Audi R8 Coupe 2012",
        ],
        |i| format!("Make {i} Model 2012"),
    );
    let k = classes.len();
    for (split, folder, annos, per_class) in [
        ("train", "cars_train", "devkit/cars_train_annos.mat", 3),
        (
            "test",
            "cars_test",
            "devkit/cars_test_annos_withlabels.mat",
            2,
        ),
    ] {
        let mut rows = Vec::new();
        for i in 0..per_class * k {
            let fname = format!("{:05}.jpg", i + 1);
            let label = (i * 2 + 1) % k; // interleaved, every class `per_class` times
            let label = if k.is_multiple_of(2) { i % k } else { label };
            let rel = format!("{folder}/{fname}");
            m.jpeg(&rel);
            m.put(split, &rel, label);
            rows.push((fname, label + 1));
        }
        m.mat(annos, &[("annotations", &cars_annotations(&rows))]);
    }
    let names_cell = MatValue::Cell {
        dims: vec![1, k],
        items: classes.iter().map(|c| MatValue::text(c)).collect(),
    };
    m.mat("devkit/cars_meta.mat", &[("class_names", &names_cell)]);
    m.corrupt("test");
    m.finish(classes)
}

/// A Stanford Dogs list file's variables for (path, label) pairs.
fn dogs_list(rows: &[(String, usize)]) -> Vec<(&'static str, MatValue)> {
    let n = rows.len();
    let cell = |f: &dyn Fn(&str) -> String| MatValue::Cell {
        dims: vec![n, 1],
        items: rows.iter().map(|(p, _)| MatValue::text(&f(p))).collect(),
    };
    vec![
        ("file_list", cell(&|p| p.to_string())),
        (
            "annotation_list",
            cell(&|p| p.trim_end_matches(".jpg").to_string()),
        ),
        (
            "labels",
            MatValue::column(rows.iter().map(|(_, l)| *l as f64).collect()),
        ),
    ]
}

/// Stanford Dogs: `Images/<wnid-name>/<wnid>_<n>.jpg`, `train_list.mat`, `test_list.mat`
/// (`file_list`, `annotation_list`, `labels`). Per class 3 train, 2 test.
pub fn dogs(root: &Path, opts: &MiniOpts) -> MiniInfo {
    let mut m = Maker::new(root, opts, &["train", "test"]);
    let classes = names(
        opts.classes,
        &[
            "n02085620-Chihuahua",
            "n02085782-Japanese_spaniel",
            "n02085936-Maltese_dog",
            "n02086079-Pekinese",
        ],
        |i| format!("n0300{i:04}-Dog_{i}"),
    );
    for (split, file, per_class) in [("train", "train_list.mat", 3), ("test", "test_list.mat", 2)] {
        let mut rows = Vec::new();
        for (c, class) in classes.iter().enumerate() {
            let wnid = &class[..9];
            for k in 0..per_class {
                let sub = format!(
                    "{class}/{wnid}_{}.jpg",
                    1000 + k * 17 + if split == "test" { 5 } else { 0 }
                );
                let rel = format!("Images/{sub}");
                m.jpeg(&rel);
                m.put(split, &rel, c);
                rows.push((sub, c + 1));
            }
        }
        let vars = dogs_list(&rows);
        let refs: Vec<(&str, &MatValue)> = vars.iter().map(|(n, v)| (*n, v)).collect();
        m.mat(file, &refs);
    }
    m.corrupt("test");
    m.finish(classes)
}

/// FGVC Aircraft: `data/images/<id>.jpg`, `data/variants.txt` (names with spaces and `/`),
/// `data/images_variant_{train,val,test}.txt`. Per class 2 train, 1 val, 2 test.
pub fn aircraft(root: &Path, opts: &MiniOpts) -> MiniInfo {
    let mut m = Maker::new(root, opts, &["train", "val", "test"]);
    let classes = names(
        opts.classes,
        &["707-320", "F/A-18", "Cessna 172", "A300B4", "DHC-1"],
        |i| format!("Variant {i}"),
    );
    m.text("data/variants.txt", &(classes.join("\n") + "\n"));
    let mut id = 1025794;
    for (split, per_class) in [("train", 2), ("val", 1), ("test", 2)] {
        let mut list = String::new();
        for (c, class) in classes.iter().enumerate() {
            for _ in 0..per_class {
                id += 13;
                let rel = format!("data/images/{id:07}.jpg");
                m.jpeg(&rel);
                m.put(split, &rel, c);
                list.push_str(&format!("{id:07} {class}\n"));
            }
        }
        m.text(&format!("data/images_variant_{split}.txt"), &list);
    }
    m.corrupt("test");
    m.finish(classes)
}

/// Caltech-256: `<NNN.name>/<NNN_NNNN>.jpg`, class c with 70 + 2c images, plus
/// `257.clutter` (3 images), a stray `RENAME2` file and a subfolder `greg/` with a JPEG.
/// Images here are the smallest (16 px) as there are many.
pub fn caltech256(root: &Path, opts: &MiniOpts) -> MiniInfo {
    let mut m = Maker::new(root, opts, &["train", "val", "test"]);
    let classes = names(
        opts.classes,
        &[
            "001.ak47",
            "002.american-flag",
            "003.backpack",
            "004.baseball-bat",
        ],
        |i| format!("{:03}.thing-{i}", i + 1),
    );
    for (c, class) in classes.iter().enumerate() {
        let prefix = &class[..3];
        // Written in reverse so that directory order is unlikely to be sorted order.
        for k in (0..70 + 2 * c).rev() {
            let rel = format!("{class}/{prefix}_{:04}.jpg", k + 1);
            m.jpeg(&rel);
            match k {
                0..=29 => m.put("train", &rel, c),
                30..=49 => m.put("val", &rel, c),
                50..=69 => m.put("test", &rel, c),
                _ => m.info.unused.push(rel),
            }
        }
    }
    m.text(&format!("{}/RENAME2", classes[0]), "stray file\n");
    let greg = format!(
        "{}/greg/{}_0001.jpg",
        classes[classes.len() - 1],
        &classes[0][..3]
    );
    m.jpeg(&greg);
    m.info.unused.push(greg);
    for k in 0..3 {
        let rel = format!("257.clutter/257_{:04}.jpg", k + 1);
        m.jpeg(&rel);
        m.info.unused.push(rel);
    }
    m.corrupt("test");
    m.finish(classes)
}

/// Flowers-102: `jpg/image_NNNNN.jpg` and `imagelabels.mat` (`labels`, 1×N double).
/// 4 images per class, labels interleaved.
pub fn flowers102(root: &Path, opts: &MiniOpts) -> MiniInfo {
    let mut m = Maker::new(root, opts, &["all"]);
    let k = opts.classes.max(1);
    let classes: Vec<String> = (1..=k).map(|c| format!("class_{c:03}")).collect();
    let mut labels = Vec::new();
    for i in 0..4 * k {
        let label = (i * 3) % k;
        let label = if k.is_multiple_of(3) { i % k } else { label };
        let rel = format!("jpg/image_{:05}.jpg", i + 1);
        m.jpeg(&rel);
        m.put("all", &rel, label);
        labels.push(label as f64 + 1.0);
    }
    m.mat("imagelabels.mat", &[("labels", &MatValue::row(labels))]);
    m.corrupt("all");
    m.finish(classes)
}
