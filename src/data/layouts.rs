//! The official folder and list-file layouts of the seven datasets of the RegSL paper
//! (spec §5): which image files form which official split, and with which class id.
//!
//! [`read`] looks files up through a `resolve` function (relative paths as in the official
//! archives, `.` for the dataset root itself), checks what the lists name (every image
//! exists, every label is in range, every line is well formed) and returns the classes, the
//! splits and an `info` record of the rules applied. It decodes nothing. Validation splits
//! drawn at random are left to a later `split` stage; only deterministic splits are made
//! here (Caltech-256 by sorted file order, FGVC Aircraft from its `val` list).
//!
//! `Entry::rel` is always relative to the dataset root (`Images/kitchen/int474.jpg`,
//! `cars_train/00001.jpg`), so it is unique across splits even where file names repeat.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::data::archive::safe_relative;
use crate::data::error::DataError;
use crate::data::imagefolder::{self, Entry};
use crate::data::matfile::{self, MatValue};

/// An official dataset layout (`layout:` in a pipeline, kebab-case).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// MIT Indoor 67.
    Indoor,
    /// CUB-200-2011 (root: the `CUB_200_2011` folder).
    Cub,
    /// Stanford Cars.
    Cars,
    /// Stanford Dogs.
    Dogs,
    /// FGVC Aircraft 2013b, variant level (root: `fgvc-aircraft-2013b`).
    Aircraft,
    /// Caltech-256 (root: `256_ObjectCategories`).
    Caltech256,
    /// Oxford Flowers-102 (root: the folder holding `jpg/` and `imagelabels.mat`).
    Flowers102,
}

/// What [`read`] found.
#[derive(Debug, Clone)]
pub struct LayoutData {
    /// Class names; the class id is the index.
    pub classes: Vec<String>,
    /// The splits in order (`train`, `test`; Aircraft and Caltech-256 `train`, `val`,
    /// `test`; Flowers-102 `all`), entries sorted by `rel` inside each.
    pub splits: Vec<(String, Vec<Entry>)>,
    /// The rules applied, the files read, counts and anything skipped.
    pub info: Value,
}

impl Layout {
    pub const ALL: [Layout; 7] = [
        Layout::Indoor,
        Layout::Cub,
        Layout::Cars,
        Layout::Dogs,
        Layout::Aircraft,
        Layout::Caltech256,
        Layout::Flowers102,
    ];

    /// The name used in pipelines (`caltech256`, `flowers102`, …).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Indoor => "indoor",
            Layout::Cub => "cub",
            Layout::Cars => "cars",
            Layout::Dogs => "dogs",
            Layout::Aircraft => "aircraft",
            Layout::Caltech256 => "caltech256",
            Layout::Flowers102 => "flowers102",
        }
    }

    /// The files and folders (relative to the dataset root; `.` is the root itself) that
    /// [`read`] needs. Stanford Cars' test labels are also accepted at the root
    /// (`cars_test_annos_withlabels.mat`, where the separate download puts them).
    pub fn required_files(self) -> &'static [&'static str] {
        match self {
            Layout::Indoor => &["Images", "TrainImages.txt", "TestImages.txt"],
            Layout::Cub => &[
                "images",
                "images.txt",
                "image_class_labels.txt",
                "train_test_split.txt",
                "classes.txt",
            ],
            Layout::Cars => &[
                "cars_train",
                "cars_test",
                "devkit/cars_train_annos.mat",
                "devkit/cars_test_annos_withlabels.mat",
                "devkit/cars_meta.mat",
            ],
            Layout::Dogs => &["Images", "train_list.mat", "test_list.mat"],
            Layout::Aircraft => &[
                "data/images",
                "data/variants.txt",
                "data/images_variant_train.txt",
                "data/images_variant_val.txt",
                "data/images_variant_test.txt",
            ],
            Layout::Caltech256 => &["."],
            Layout::Flowers102 => &["jpg", "imagelabels.mat"],
        }
    }
}

/// Reads `layout` from the files `resolve` finds (see the module docs).
pub fn read(
    layout: Layout,
    resolve: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<LayoutData, DataError> {
    let mut cx = Cx {
        layout,
        resolve,
        read: Vec::new(),
    };
    let (classes, splits, extra) = match layout {
        Layout::Indoor => indoor(&mut cx)?,
        Layout::Cub => cub(&mut cx)?,
        Layout::Cars => cars(&mut cx)?,
        Layout::Dogs => dogs(&mut cx)?,
        Layout::Aircraft => aircraft(&mut cx)?,
        Layout::Caltech256 => caltech256(&mut cx)?,
        Layout::Flowers102 => flowers102(&mut cx)?,
    };
    let mut splits: Vec<(String, Vec<Entry>)> = splits;
    for (_, entries) in &mut splits {
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        debug_assert!(entries.iter().all(|e| e.label < classes.len()));
    }
    let mut overlap = serde_json::Map::new();
    for i in 0..splits.len() {
        let a: BTreeSet<&str> = splits[i].1.iter().map(|e| e.rel.as_str()).collect();
        for j in i + 1..splits.len() {
            let n = splits[j]
                .1
                .iter()
                .filter(|e| a.contains(e.rel.as_str()))
                .count();
            if n > 0 {
                overlap.insert(format!("{}/{}", splits[i].0, splits[j].0), json!(n));
            }
        }
    }
    let counts: serde_json::Map<String, Value> = splits
        .iter()
        .map(|(s, e)| (s.clone(), json!(e.len())))
        .collect();
    let mut info = json!({
        "layout": layout.name(),
        "classes": classes.len(),
        "counts": counts,
        "files_read": cx.read,
        "rel": "entry paths are relative to the dataset root",
    });
    if !overlap.is_empty() {
        info["images_in_two_splits"] = Value::Object(overlap);
    }
    if let (Value::Object(info), Value::Object(extra)) = (&mut info, extra) {
        info.extend(extra);
    }
    Ok(LayoutData {
        classes,
        splits,
        info,
    })
}

type Parts = (Vec<String>, Vec<(String, Vec<Entry>)>, Value);

struct Cx<'a> {
    layout: Layout,
    resolve: &'a dyn Fn(&str) -> Option<PathBuf>,
    read: Vec<String>,
}

impl Cx<'_> {
    fn missing(&self, rel: &str, what: &str) -> DataError {
        let needs: Vec<String> = self
            .layout
            .required_files()
            .iter()
            .map(|f| format!("`{f}`"))
            .collect();
        DataError::invalid(format!(
            "{} layout: {what} `{rel}` is missing from the dataset root; the layout needs {} \
             (relative to the dataset root, as in the official archives)",
            self.layout.name(),
            needs.join(", ")
        ))
    }

    fn find(&mut self, rel: &str, dir: bool) -> Option<PathBuf> {
        let p = (self.resolve)(rel)?;
        let ok = if dir { p.is_dir() } else { p.is_file() };
        if ok {
            self.read.push(rel.to_string());
            Some(p)
        } else {
            None
        }
    }

    fn file(&mut self, rel: &str) -> Result<PathBuf, DataError> {
        self.find(rel, false)
            .ok_or_else(|| self.missing(rel, "file"))
    }

    fn dir(&mut self, rel: &str) -> Result<PathBuf, DataError> {
        self.find(rel, true)
            .ok_or_else(|| self.missing(rel, "folder"))
    }

    /// The non-empty lines of a text file, with their 1-based numbers, trimmed (CRLF, a
    /// byte-order mark and surrounding blanks removed).
    fn lines(&mut self, rel: &str) -> Result<Vec<(usize, String)>, DataError> {
        let path = self.file(rel)?;
        let bytes = std::fs::read(&path).map_err(DataError::read(format_args!(
            "cannot read `{rel}` ({})",
            path.display()
        )))?;
        let text = String::from_utf8(bytes).map_err(|source| DataError::NotText {
            file: format!("`{rel}`"),
            source,
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        Ok(text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim().to_string()))
            .filter(|(_, l)| !l.is_empty())
            .collect())
    }

    fn mat(&mut self, rel: &str) -> Result<BTreeMap<String, MatValue>, DataError> {
        let path = self.file(rel)?;
        matfile::read_mat(&path).map_err(|e| e.within(format!("`{rel}`")))
    }
}

/// `<first> <rest>` split at the first run of blanks.
fn two_fields<'a>(
    rel: &str,
    no: usize,
    line: &'a str,
    what: &str,
) -> Result<(&'a str, &'a str), DataError> {
    line.split_once([' ', '\t'])
        .map(|(a, b)| (a, b.trim()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| {
            DataError::invalid(format!(
                "`{rel}` line {no}: `{line}` is not of the form `{what}`"
            ))
        })
}

fn positive_int(s: &str) -> Option<usize> {
    s.parse::<usize>().ok().filter(|&n| n > 0)
}

/// An integer label from a MAT-file value, 1-based, checked against `1..=max` (no upper
/// bound when `max` is None).
fn mat_label(x: f64, max: Option<usize>) -> Option<usize> {
    if x.fract() != 0.0 || !(1.0..=1e9).contains(&x) {
        return None;
    }
    let l = x as usize;
    max.is_none_or(|m| l <= m).then_some(l)
}

/// The entry for the image `sub` (relative to the folder `base_rel`, found at `base`);
/// `at` says where it was named, for messages.
fn image(
    base: &Path,
    base_rel: &str,
    sub: &str,
    label: usize,
    at: &str,
) -> Result<Entry, DataError> {
    let sub = sub.replace('\\', "/");
    let Some(rel_path) = safe_relative(Path::new(&sub)).filter(|p| p.components().count() > 0)
    else {
        return Err(DataError::invalid(format!(
            "{at}: `{sub}` is not a relative path inside `{base_rel}`"
        )));
    };
    let path = base.join(&rel_path);
    if !path.is_file() {
        return Err(DataError::invalid(format!(
            "{at}: the image `{base_rel}/{sub}` does not exist ({} is missing)",
            path.display()
        )));
    }
    Ok(Entry {
        rel: format!("{base_rel}/{sub}"),
        path,
        label,
    })
}

fn indoor(cx: &mut Cx) -> Result<Parts, DataError> {
    let images = cx.dir("Images")?;
    let classes = imagefolder::class_names(&images)?;
    if classes.is_empty() {
        return Err(DataError::invalid(
            "indoor layout: `Images` has no class folders",
        ));
    }
    let mut splits = Vec::new();
    for (split, list) in [("train", "TrainImages.txt"), ("test", "TestImages.txt")] {
        let path = cx.file(list)?;
        let entries = imagefolder::read_list(&path, list, &images, &classes)?
            .into_iter()
            .map(|e| Entry {
                rel: format!("Images/{}", e.rel),
                ..e
            })
            .collect();
        splits.push((split.to_string(), entries));
    }
    let extra = json!({
        "rules": [
            "train / test: the images TrainImages.txt / TestImages.txt name (`<class>/<file>`)",
            "class ids: the folder names under Images, sorted byte-wise (the authors' name_to_id.json is not published)",
            "validation: none here (10% of train, seed 0, is drawn by a later split stage)",
        ],
    });
    Ok((classes, splits, extra))
}

fn cub(cx: &mut Cx) -> Result<Parts, DataError> {
    let images = cx.dir("images")?;
    // classes.txt: `<id> <name>`, ids 1..=K.
    let mut by_id: BTreeMap<usize, String> = BTreeMap::new();
    for (no, line) in cx.lines("classes.txt")? {
        let (id, name) = two_fields("classes.txt", no, &line, "<class id> <name>")?;
        let id = positive_int(id).ok_or_else(|| {
            DataError::invalid(format!(
                "`classes.txt` line {no}: class id `{id}` is not a positive integer"
            ))
        })?;
        if by_id.insert(id, name.to_string()).is_some() {
            return Err(DataError::invalid(format!(
                "`classes.txt` line {no}: class id {id} appears twice"
            )));
        }
    }
    let k = by_id.len();
    if k == 0 {
        return Err(DataError::invalid("`classes.txt` lists no classes"));
    }
    if let Some((&id, _)) = by_id
        .iter()
        .enumerate()
        .find(|(i, (&id, _))| id != i + 1)
        .map(|(_, p)| p)
    {
        return Err(DataError::invalid(format!(
            "`classes.txt`: class ids must be 1..{k}, found {id} (ids missing before it)"
        )));
    }
    let classes: Vec<String> = by_id.into_values().collect();

    // The three per-image files, keyed by image id.
    let mut per_file = Vec::new();
    for (rel, form) in [
        ("images.txt", "<image id> <path>"),
        ("image_class_labels.txt", "<image id> <class id>"),
        ("train_test_split.txt", "<image id> <1 train | 0 test>"),
    ] {
        let mut map: BTreeMap<usize, (usize, String)> = BTreeMap::new();
        for (no, line) in cx.lines(rel)? {
            let (id, value) = two_fields(rel, no, &line, form)?;
            let id = positive_int(id).ok_or_else(|| {
                DataError::invalid(format!(
                    "`{rel}` line {no}: image id `{id}` is not a positive integer"
                ))
            })?;
            if map.insert(id, (no, value.to_string())).is_some() {
                return Err(DataError::invalid(format!(
                    "`{rel}` line {no}: image id {id} appears twice"
                )));
            }
        }
        per_file.push((rel, map));
    }
    let [(_, paths), (_, labels), (_, split_of)] =
        <[_; 3]>::try_from(per_file).expect("three files");
    for (rel, map) in [
        ("image_class_labels.txt", &labels),
        ("train_test_split.txt", &split_of),
    ] {
        if let Some((id, (no, _))) = map.iter().find(|(id, _)| !paths.contains_key(id)) {
            return Err(DataError::invalid(format!(
                "`{rel}` line {no}: image id {id} is not in `images.txt`"
            )));
        }
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (id, (no, path)) in &paths {
        let at = format!("`images.txt` line {no}");
        let (lno, class) = labels.get(id).ok_or_else(|| {
            DataError::invalid(format!(
                "{at}: image id {id} has no line in `image_class_labels.txt`"
            ))
        })?;
        let label = positive_int(class).filter(|&c| c <= k).ok_or_else(|| {
            DataError::invalid(format!(
                "`image_class_labels.txt` line {lno}: class id `{class}` is outside 1..{k} (the ids of `classes.txt`)"
            ))
        })? - 1;
        let (sno, flag) = split_of.get(id).ok_or_else(|| {
            DataError::invalid(format!(
                "{at}: image id {id} has no line in `train_test_split.txt`"
            ))
        })?;
        let is_train = match flag.as_str() {
            "1" => true,
            "0" => false,
            other => {
                return Err(DataError::invalid(format!(
                    "`train_test_split.txt` line {sno}: `{other}` is neither 1 (train) nor 0 (test)"
                )))
            }
        };
        let entry = image(&images, "images", path, label, &at)?;
        if is_train { &mut train } else { &mut test }.push(entry);
    }
    let extra = json!({
        "rules": [
            "train / test: train_test_split.txt (1 train, 0 test) over the images of images.txt",
            "label: the class id of image_class_labels.txt minus 1; class names from classes.txt",
            "validation: none here (10% of train, seed 0, is drawn by a later split stage)",
        ],
    });
    Ok((
        classes,
        vec![("train".into(), train), ("test".into(), test)],
        extra,
    ))
}

/// The strings of a cell array of char (`what` names it in messages).
fn cell_strings(v: &MatValue, what: &str) -> Result<Vec<String>, DataError> {
    let MatValue::Cell { items, .. } = v else {
        return Err(DataError::invalid(format!(
            "{what} is a {}, not a cell array of text",
            v.describe()
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str().map(str::to_string).ok_or_else(|| {
                DataError::invalid(format!(
                    "{what}{{{}}} is a {}, not text",
                    i + 1,
                    item.describe()
                ))
            })
        })
        .collect()
}

fn cars(cx: &mut Cx) -> Result<Parts, DataError> {
    let meta = cx.mat("devkit/cars_meta.mat")?;
    let classes = cell_strings(
        meta.get("class_names").ok_or_else(|| {
            DataError::invalid("`devkit/cars_meta.mat` has no variable `class_names`")
        })?,
        "`devkit/cars_meta.mat`: class_names",
    )?;
    let k = classes.len();
    if k == 0 {
        return Err(DataError::invalid(
            "`devkit/cars_meta.mat`: class_names is empty",
        ));
    }
    let test_annos = if cx
        .find("devkit/cars_test_annos_withlabels.mat", false)
        .is_some()
    {
        cx.read.pop();
        "devkit/cars_test_annos_withlabels.mat"
    } else if cx.find("cars_test_annos_withlabels.mat", false).is_some() {
        cx.read.pop();
        "cars_test_annos_withlabels.mat"
    } else {
        return Err(cx.missing("devkit/cars_test_annos_withlabels.mat", "file"));
    };
    let mut splits = Vec::new();
    for (split, folder, annos) in [
        ("train", "cars_train", "devkit/cars_train_annos.mat"),
        ("test", "cars_test", test_annos),
    ] {
        let dir = cx.dir(folder)?;
        let vars = cx.mat(annos)?;
        let v = vars.get("annotations").ok_or_else(|| {
            DataError::invalid(format!("`{annos}` has no variable `annotations`"))
        })?;
        let MatValue::Struct { fields, items, .. } = v else {
            return Err(DataError::invalid(format!(
                "`{annos}`: annotations is a {}, not a struct array",
                v.describe()
            )));
        };
        for f in ["class", "fname"] {
            if !fields.iter().any(|x| x == f) {
                let hint = if f == "class" && split == "test" {
                    " (the test annotations without labels? use cars_test_annos_withlabels.mat)"
                } else {
                    ""
                };
                return Err(DataError::invalid(format!(
                    "`{annos}`: annotations has no field `{f}`{hint}"
                )));
            }
        }
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("`{annos}` annotations({})", i + 1);
            let fname = item["fname"].as_str().ok_or_else(|| {
                DataError::invalid(format!(
                    "{at}.fname is a {}, not text",
                    item["fname"].describe()
                ))
            })?;
            let class = item["class"].as_scalar().ok_or_else(|| {
                DataError::invalid(format!(
                    "{at}.class is a {}, not a number",
                    item["class"].describe()
                ))
            })?;
            let label = mat_label(class, Some(k)).ok_or_else(|| {
                DataError::invalid(format!(
                    "{at}.class is {class}, outside 1..{k} (the class_names of devkit/cars_meta.mat)"
                ))
            })? - 1;
            entries.push(image(&dir, folder, fname, label, &at)?);
        }
        splits.push((split.to_string(), entries));
    }
    let extra = json!({
        "rules": [
            "train: the annotations of devkit/cars_train_annos.mat (images in cars_train)",
            format!("test: the annotations of {test_annos} (images in cars_test)"),
            "label: annotation `class` minus 1; class names from devkit/cars_meta.mat class_names",
            "bounding boxes: not used (whole images)",
            "validation: none here (10% of train, seed 0, is drawn by a later split stage)",
        ],
    });
    Ok((classes, splits, extra))
}

fn dogs(cx: &mut Cx) -> Result<Parts, DataError> {
    let images = cx.dir("Images")?;
    let mut lists = Vec::new();
    for (split, rel) in [("train", "train_list.mat"), ("test", "test_list.mat")] {
        let vars = cx.mat(rel)?;
        let files = cell_strings(
            vars.get("file_list").ok_or_else(|| {
                DataError::invalid(format!("`{rel}` has no variable `file_list`"))
            })?,
            &format!("`{rel}`: file_list"),
        )?;
        let labels_v = vars
            .get("labels")
            .ok_or_else(|| DataError::invalid(format!("`{rel}` has no variable `labels`")))?;
        let labels = labels_v.as_nums().ok_or_else(|| {
            DataError::invalid(format!(
                "`{rel}`: labels is a {}, not numbers",
                labels_v.describe()
            ))
        })?;
        if labels.len() != files.len() {
            return Err(DataError::invalid(format!(
                "`{rel}`: file_list has {} entries but labels has {}",
                files.len(),
                labels.len()
            )));
        }
        lists.push((split, rel, files, labels.to_vec()));
    }
    // The class of each label: the folder its files are in.
    let mut folder_of: BTreeMap<usize, (String, String)> = BTreeMap::new();
    for (_, rel, files, labels) in &lists {
        for (i, (file, &x)) in files.iter().zip(labels).enumerate() {
            let at = format!("`{rel}` entry {}", i + 1);
            let label = mat_label(x, None).ok_or_else(|| {
                DataError::invalid(format!("{at}: label {x} is not a positive integer"))
            })?;
            let folder = file.replace('\\', "/");
            let Some((folder, _)) = folder.split_once('/') else {
                return Err(DataError::invalid(format!(
                    "{at}: `{file}` is not of the form <class folder>/<file>"
                )));
            };
            match folder_of.get(&label) {
                Some((f, first)) if f != folder => {
                    return Err(DataError::invalid(format!(
                        "{at}: label {label} is given to folder `{folder}`, but {first} gave it to `{f}`"
                    )))
                }
                Some(_) => {}
                None => {
                    folder_of.insert(label, (folder.to_string(), at));
                }
            }
        }
    }
    let k = folder_of.keys().next_back().copied().unwrap_or(0);
    if k == 0 {
        return Err(DataError::invalid(
            "dogs layout: train_list.mat and test_list.mat list no images",
        ));
    }
    if let Some(missing) = (1..=k).find(|l| !folder_of.contains_key(l)) {
        return Err(DataError::invalid(format!(
            "dogs layout: label {missing} is used by no file of train_list.mat or test_list.mat \
             (labels run to {k}), so its class folder is unknown"
        )));
    }
    let classes: Vec<String> = folder_of.into_values().map(|(f, _)| f).collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in classes.iter().enumerate() {
        if let Some(j) = seen.insert(c, i) {
            return Err(DataError::invalid(format!(
                "dogs layout: folder `{c}` has two labels, {} and {}",
                j + 1,
                i + 1
            )));
        }
    }
    let mut splits = Vec::new();
    for (split, rel, files, labels) in lists {
        let mut entries = Vec::with_capacity(files.len());
        for (i, (file, x)) in files.iter().zip(labels).enumerate() {
            let at = format!("`{rel}` entry {}", i + 1);
            entries.push(image(&images, "Images", file, x as usize - 1, &at)?);
        }
        splits.push((split.to_string(), entries));
    }
    let extra = json!({
        "rules": [
            "train / test: file_list and labels of train_list.mat / test_list.mat (images under Images)",
            "label: labels minus 1; class names: the folder of each label's files, in label order",
            "validation: none here (10% of train, seed 0, is drawn by a later split stage)",
        ],
    });
    Ok((classes, splits, extra))
}

fn aircraft(cx: &mut Cx) -> Result<Parts, DataError> {
    let images = cx.dir("data/images")?;
    let mut classes: Vec<String> = Vec::new();
    let mut id_of: BTreeMap<String, usize> = BTreeMap::new();
    for (no, line) in cx.lines("data/variants.txt")? {
        if id_of.insert(line.clone(), classes.len()).is_some() {
            return Err(DataError::invalid(format!(
                "`data/variants.txt` line {no}: variant `{line}` appears twice"
            )));
        }
        classes.push(line);
    }
    if classes.is_empty() {
        return Err(DataError::invalid("`data/variants.txt` lists no variants"));
    }
    let mut splits = Vec::new();
    for split in ["train", "val", "test"] {
        let rel = format!("data/images_variant_{split}.txt");
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (no, line) in cx.lines(&rel)? {
            let (id, variant) = two_fields(&rel, no, &line, "<image id> <variant>")?;
            let at = format!("`{rel}` line {no}");
            let Some(&label) = id_of.get(variant) else {
                let hint = crate::hint::did_you_mean(variant, classes.iter().map(String::as_str))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                return Err(DataError::invalid(format!(
                    "{at}: variant `{variant}` is not in `data/variants.txt`{hint}"
                )));
            };
            if id.contains('/') || id.contains('\\') {
                return Err(DataError::invalid(format!(
                    "{at}: image id `{id}` contains a path separator"
                )));
            }
            match seen.get(id) {
                Some((first, v)) if v != variant => {
                    return Err(DataError::invalid(format!(
                        "{at}: image {id} is `{variant}` here but `{v}` on line {first}"
                    )))
                }
                Some(_) => continue,
                None => {
                    seen.insert(id.to_string(), (no, variant.to_string()));
                }
            }
            entries.push(image(
                &images,
                "data/images",
                &format!("{id}.jpg"),
                label,
                &at,
            )?);
        }
        splits.push((split.to_string(), entries));
    }
    let extra = json!({
        "rules": [
            "train / val / test: data/images_variant_{train,val,test}.txt (`<id> <variant>`, image data/images/<id>.jpg)",
            "class ids: the order of data/variants.txt (variant level, 100 classes)",
            "images used whole (the copyright banner at the bottom is not cropped here)",
        ],
    });
    Ok((classes, splits, extra))
}

/// Caltech-256: per class, the first 30 / next 20 / next 20 files (sorted by name).
pub const CALTECH_SPLITS: [(&str, usize); 3] = [("train", 30), ("val", 20), ("test", 20)];
const CALTECH_CLUTTER: &str = "257.clutter";

fn caltech256(cx: &mut Cx) -> Result<Parts, DataError> {
    let root = cx.dir(".")?;
    let mut classes = imagefolder::class_names(&root)?;
    let had_clutter = classes.iter().any(|c| c == CALTECH_CLUTTER);
    classes.retain(|c| c != CALTECH_CLUTTER);
    if classes.is_empty() {
        return Err(DataError::invalid(format!(
            "caltech256 layout: no class folders in the dataset root ({})",
            root.display()
        )));
    }
    let mut splits: Vec<(String, Vec<Entry>)> = CALTECH_SPLITS
        .iter()
        .map(|(s, _)| (s.to_string(), Vec::new()))
        .collect();
    let (mut ignored, mut unused, mut short) = (Vec::new(), 0usize, Vec::new());
    let wanted: usize = CALTECH_SPLITS.iter().map(|(_, n)| n).sum();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files = Vec::new();
        let listing = std::fs::read_dir(&dir)
            .map_err(DataError::read(format_args!("cannot list `{class}`")))?;
        for entry in listing {
            let entry = entry.map_err(DataError::read(format_args!("cannot list `{class}`")))?;
            let Ok(name) = entry.file_name().into_string() else {
                ignored.push(format!("{class}/{}", entry.file_name().to_string_lossy()));
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let is_file = entry
                .path()
                .metadata()
                .map(|m| m.is_file())
                .unwrap_or(false);
            if is_file && name.to_ascii_lowercase().ends_with(".jpg") {
                files.push(name);
            } else {
                ignored.push(format!("{class}/{name}{}", if is_file { "" } else { "/" }));
            }
        }
        files.sort();
        if files.len() < wanted {
            short.push(json!({"class": class, "images": files.len()}));
        }
        unused += files.len().saturating_sub(wanted);
        let mut rest = files.as_slice();
        for (i, (_, n)) in CALTECH_SPLITS.iter().enumerate() {
            let take = rest.len().min(*n);
            for name in &rest[..take] {
                splits[i].1.push(Entry {
                    rel: format!("{class}/{name}"),
                    path: dir.join(name),
                    label,
                });
            }
            rest = &rest[take..];
        }
    }
    ignored.sort();
    let extra = json!({
        "rules": [
            "per class, the .jpg files sorted by name: 0-29 train, 30-49 val, 50-69 test, the rest unused",
            "the original code used unsorted directory order; sorting makes the split the same on every machine",
            "class ids: the class folder names sorted byte-wise, without 257.clutter",
            "non-.jpg files and subfolders of a class folder are ignored",
        ],
        "clutter_removed": had_clutter,
        "unused_images": unused,
        "ignored": ignored,
        "classes_short_of_70_images": short,
    });
    Ok((classes, splits, extra))
}

fn flowers102(cx: &mut Cx) -> Result<Parts, DataError> {
    let jpg = cx.dir("jpg")?;
    let vars = cx.mat("imagelabels.mat")?;
    let v = vars
        .get("labels")
        .ok_or_else(|| DataError::invalid("`imagelabels.mat` has no variable `labels`"))?;
    let labels = v.as_nums().ok_or_else(|| {
        DataError::invalid(format!(
            "`imagelabels.mat`: labels is a {}, not numbers",
            v.describe()
        ))
    })?;
    if labels.is_empty() {
        return Err(DataError::invalid("`imagelabels.mat`: labels is empty"));
    }
    let mut entries = Vec::with_capacity(labels.len());
    let mut k = 0;
    for (i, &x) in labels.iter().enumerate() {
        let at = format!("`imagelabels.mat` labels({})", i + 1);
        let label = mat_label(x, None)
            .ok_or_else(|| DataError::invalid(format!("{at} is {x}, not a positive integer")))?;
        k = k.max(label);
        entries.push(image(
            &jpg,
            "jpg",
            &format!("image_{:05}.jpg", i + 1),
            label - 1,
            &at,
        )?);
    }
    let classes = (1..=k).map(|c| format!("class_{c:03}")).collect();
    let extra = json!({
        "rules": [
            "all: image i is jpg/image_<i, 5 digits>.jpg with labels(i) of imagelabels.mat",
            "label: labels minus 1; classes named class_001.. (no official names); K = the largest label",
            "validation / test / train: none here (a later seeded split makes them)",
        ],
    });
    Ok((classes, vec![("all".to_string(), entries)], extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::miniature::{self, MiniInfo, MiniOpts};

    type Maker = fn(&Path, &MiniOpts) -> MiniInfo;

    const MAKERS: [(Layout, Maker); 7] = [
        (Layout::Indoor, miniature::indoor),
        (Layout::Cub, miniature::cub),
        (Layout::Cars, miniature::cars),
        (Layout::Dogs, miniature::dogs),
        (Layout::Aircraft, miniature::aircraft),
        (Layout::Caltech256, miniature::caltech256),
        (Layout::Flowers102, miniature::flowers102),
    ];

    fn maker(layout: Layout) -> Maker {
        MAKERS.iter().find(|(l, _)| *l == layout).expect("maker").1
    }

    fn read_dir(layout: Layout, root: &Path) -> Result<LayoutData, DataError> {
        read(layout, &miniature::resolver(root))
    }

    /// Reads `layout`'s miniature and checks it against what was generated.
    fn check(layout: Layout, opts: &MiniOpts) -> (LayoutData, MiniInfo) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mini = maker(layout)(&root, opts);
        let data = read_dir(layout, &root).unwrap_or_else(|e| panic!("{layout:?}: {e}"));
        assert_eq!(data.classes, mini.classes, "{layout:?}");
        let got: Vec<(String, Vec<(String, usize)>)> = data
            .splits
            .iter()
            .map(|(s, es)| {
                (
                    s.clone(),
                    es.iter().map(|e| (e.rel.clone(), e.label)).collect(),
                )
            })
            .collect();
        assert_eq!(got, mini.splits, "{layout:?}");
        for (split, n) in mini.counts() {
            assert_eq!(data.info["counts"][&split], json!(n), "{layout:?}");
            assert!(n > 0, "{layout:?} {split}");
        }
        assert_eq!(data.info["layout"], json!(layout.name()));
        assert!(data.info.get("images_in_two_splits").is_none());
        for (_, entries) in &data.splits {
            for e in entries {
                assert_eq!(e.path, root.join(&e.rel), "{layout:?}");
                let decoded = imagefolder::decode_rgb(&e.path);
                if mini.corrupt.as_deref() == Some(e.rel.as_str()) {
                    assert!(decoded.is_err(), "{layout:?}: {} should be corrupt", e.rel);
                } else {
                    let ([h, w, c], _) = decoded.unwrap();
                    assert!((20..=60).contains(&h) && (20..=60).contains(&w) && c == 3);
                }
            }
        }
        (data, mini)
    }

    #[test]
    fn miniatures_read_back() {
        for (layout, _) in MAKERS {
            let (_, mini) = check(layout, &MiniOpts::default());
            assert_eq!(mini.classes.len(), 3);
            assert!(!mini.grey.is_empty(), "{layout:?}");
            let opts = MiniOpts {
                classes: 5,
                corrupt: true,
                compress_mat: false,
                ..MiniOpts::default()
            };
            let (_, mini) = check(layout, &opts);
            assert_eq!(mini.classes.len(), 5);
            assert!(mini.corrupt.is_some());
        }
    }

    #[test]
    fn layout_specifics() {
        let (data, mini) = check(Layout::Indoor, &MiniOpts::default());
        assert_eq!(data.classes, vec!["airport_inside", "bakery", "kitchen"]);
        assert_eq!(mini.counts(), vec![("train".into(), 9), ("test".into(), 6)]);
        assert_eq!(mini.unused.len(), 3);

        let (data, _) = check(Layout::Cub, &MiniOpts::default());
        assert_eq!(data.classes[0], "001.Black_footed_Albatross");
        assert_eq!(data.splits[0].1.len() + data.splits[1].1.len(), 3 + 4 + 5);

        let (data, _) = check(Layout::Aircraft, &MiniOpts::default());
        assert_eq!(data.classes, vec!["707-320", "F/A-18", "Cessna 172"]);
        assert_eq!(
            data.splits
                .iter()
                .map(|(s, e)| (s.as_str(), e.len()))
                .collect::<Vec<_>>(),
            vec![("train", 6), ("val", 3), ("test", 6)]
        );

        let (data, mini) = check(Layout::Caltech256, &MiniOpts::default());
        assert_eq!(
            data.classes,
            vec!["001.ak47", "002.american-flag", "003.backpack"]
        );
        assert_eq!(
            data.splits
                .iter()
                .map(|(s, e)| (s.as_str(), e.len()))
                .collect::<Vec<_>>(),
            vec![("train", 90), ("val", 60), ("test", 60)]
        );
        assert_eq!(data.splits[0].1[0].rel, "001.ak47/001_0001.jpg");
        assert_eq!(data.splits[0].1[29].rel, "001.ak47/001_0030.jpg");
        assert_eq!(data.splits[1].1[0].rel, "001.ak47/001_0031.jpg");
        assert_eq!(data.info["clutter_removed"], json!(true));
        assert_eq!(data.info["unused_images"], json!(6));
        assert_eq!(
            data.info["ignored"],
            json!(["001.ak47/RENAME2", "003.backpack/greg/"])
        );
        assert_eq!(mini.unused.len(), 6 + 1 + 3);

        let (data, _) = check(Layout::Flowers102, &MiniOpts::default());
        assert_eq!(data.classes, vec!["class_001", "class_002", "class_003"]);
        assert_eq!(data.splits[0].1.len(), 12);
    }

    #[test]
    fn caltech_short_class_and_cars_test_labels_at_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        miniature::caltech256(root, &MiniOpts::default());
        for k in 41..=70 {
            std::fs::remove_file(root.join(format!("002.american-flag/002_{k:04}.jpg"))).unwrap();
        }
        std::fs::remove_dir_all(root.join("257.clutter")).unwrap();
        let data = read_dir(Layout::Caltech256, root).unwrap();
        assert_eq!(data.info["clutter_removed"], json!(false));
        assert_eq!(
            data.info["classes_short_of_70_images"],
            json!([{"class": "002.american-flag", "images": 42}])
        );
        let per = |s: usize| data.splits[s].1.iter().filter(|e| e.label == 1).count();
        assert_eq!((per(0), per(1), per(2)), (30, 12, 0)); // 1..=40, 71, 72

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        miniature::cars(root, &MiniOpts::default());
        std::fs::rename(
            root.join("devkit/cars_test_annos_withlabels.mat"),
            root.join("cars_test_annos_withlabels.mat"),
        )
        .unwrap();
        let data = read_dir(Layout::Cars, root).unwrap();
        assert_eq!(data.splits[1].1.len(), 6);
        assert!(data.info["files_read"]
            .as_array()
            .unwrap()
            .contains(&json!("cars_test_annos_withlabels.mat")));
    }

    /// Makes `layout`'s miniature, applies `spoil`, and returns the error of reading it.
    fn spoiled(layout: Layout, spoil: impl Fn(&Path)) -> DataError {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        maker(layout)(root, &MiniOpts::default());
        spoil(root);
        let e = read_dir(layout, root).expect_err("should fail");
        assert!(e.is_user(), "{e}");
        e
    }

    fn has(e: &DataError, needles: &[&str]) {
        for n in needles {
            assert!(e.render().contains(n), "`{n}` not in: {}", e.render());
        }
    }

    fn rm(rel: &'static str) -> impl Fn(&Path) {
        move |root: &Path| {
            let p = root.join(rel);
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap()
            } else {
                std::fs::remove_file(p).unwrap()
            }
        }
    }

    fn write(rel: &'static str, text: &'static str) -> impl Fn(&Path) {
        move |root: &Path| std::fs::write(root.join(rel), text).unwrap()
    }

    fn mat(rel: &'static str, vars: Vec<(&'static str, MatValue)>) -> impl Fn(&Path) {
        move |root: &Path| {
            let refs: Vec<(&str, &MatValue)> = vars.iter().map(|(n, v)| (*n, v)).collect();
            matfile::write_mat(&root.join(rel), &refs, false).unwrap()
        }
    }

    #[test]
    fn missing_files_name_what_the_layout_needs() {
        let e = spoiled(Layout::Indoor, rm("TestImages.txt"));
        has(
            &e,
            &[
                "`TestImages.txt` is missing",
                "`Images`, `TrainImages.txt`, `TestImages.txt`",
            ],
        );
        let e = spoiled(Layout::Cub, rm("train_test_split.txt"));
        has(&e, &["`train_test_split.txt` is missing", "`classes.txt`"]);
        let e = spoiled(Layout::Cars, rm("devkit/cars_test_annos_withlabels.mat"));
        has(
            &e,
            &[
                "`devkit/cars_test_annos_withlabels.mat` is missing",
                "`cars_train`",
            ],
        );
        let e = spoiled(Layout::Dogs, rm("Images"));
        has(&e, &["folder `Images` is missing"]);
        let e = spoiled(Layout::Aircraft, rm("data/images_variant_val.txt"));
        has(&e, &["`data/images_variant_val.txt` is missing"]);
        let e = spoiled(Layout::Flowers102, rm("imagelabels.mat"));
        has(&e, &["`imagelabels.mat` is missing", "`jpg`"]);
        let e = read(Layout::Caltech256, &|_| None).unwrap_err();
        has(&e, &["folder `.` is missing"]);
    }

    #[test]
    fn lists_naming_missing_images() {
        let e = spoiled(Layout::Indoor, rm("Images/kitchen/kit_0.jpg"));
        has(&e, &["TrainImages.txt", "line 9", "kitchen/kit_0.jpg"]);
        let e = spoiled(
            Layout::Cub,
            rm("images/002.Laysan_Albatross/Laysan_Albatross_0001_796004.jpg"),
        );
        has(&e, &["`images.txt` line 4", "does not exist"]);
        let e = spoiled(Layout::Cars, rm("cars_test/00002.jpg"));
        has(
            &e,
            &[
                "`devkit/cars_test_annos_withlabels.mat` annotations(2)",
                "cars_test/00002.jpg",
            ],
        );
        let e = spoiled(
            Layout::Dogs,
            rm("Images/n02085620-Chihuahua/n02085620_1017.jpg"),
        );
        has(&e, &["`train_list.mat` entry 2", "does not exist"]);
        let e = spoiled(Layout::Aircraft, rm("data/images/1025820.jpg"));
        has(
            &e,
            &[
                "`data/images_variant_train.txt` line 2",
                "data/images/1025820.jpg",
            ],
        );
        let e = spoiled(Layout::Flowers102, rm("jpg/image_00003.jpg"));
        has(&e, &["`imagelabels.mat` labels(3)", "jpg/image_00003.jpg"]);
    }

    #[test]
    fn bad_labels_and_lines() {
        let e = spoiled(Layout::Cub, write("image_class_labels.txt", "1 4\n"));
        has(&e, &["`image_class_labels.txt` line 1", "outside 1..3"]);
        let e = spoiled(Layout::Cub, write("train_test_split.txt", "1 2\n"));
        has(&e, &["`train_test_split.txt` line 1", "neither 1"]);
        let e = spoiled(Layout::Cub, write("images.txt", "\n\nfoo\n"));
        has(&e, &["`images.txt` line 3", "not of the form"]);
        let e = spoiled(Layout::Cub, write("classes.txt", "1 a\n3 c\n"));
        has(&e, &["`classes.txt`", "1..2"]);
        let e = spoiled(Layout::Indoor, write("TrainImages.txt", "attic/x.jpg\r\n"));
        has(&e, &["TrainImages.txt line 1", "not a class folder"]);
        let e = spoiled(
            Layout::Aircraft,
            write("data/images_variant_test.txt", "1025794 F-A-18\n"),
        );
        has(
            &e,
            &[
                "`data/images_variant_test.txt` line 1",
                "`F-A-18`",
                "did you mean `F/A-18`",
            ],
        );
        let e = spoiled(
            Layout::Aircraft,
            write("data/images_variant_val.txt", "../../etc/passwd 707-320\n"),
        );
        has(&e, &["line 1", "path separator"]);

        let mut item = BTreeMap::new();
        item.insert("fname".to_string(), MatValue::text("00001.jpg"));
        item.insert("class".to_string(), MatValue::row(vec![4.0]));
        let annos = MatValue::Struct {
            dims: vec![1, 1],
            fields: vec!["class".into(), "fname".into()],
            items: vec![item],
        };
        let e = spoiled(
            Layout::Cars,
            mat("devkit/cars_train_annos.mat", vec![("annotations", annos)]),
        );
        has(
            &e,
            &["`devkit/cars_train_annos.mat` annotations(1).class is 4, outside 1..3"],
        );
        let e = spoiled(
            Layout::Cars,
            mat(
                "devkit/cars_meta.mat",
                vec![("names", MatValue::row(vec![1.0]))],
            ),
        );
        has(
            &e,
            &["`devkit/cars_meta.mat` has no variable `class_names`"],
        );

        let list = |labels: Vec<f64>, files: &[&str]| {
            vec![
                (
                    "file_list",
                    MatValue::Cell {
                        dims: vec![files.len(), 1],
                        items: files.iter().map(|f| MatValue::text(f)).collect(),
                    },
                ),
                ("labels", MatValue::column(labels)),
            ]
        };
        let chi = "n02085620-Chihuahua/n02085620_1000.jpg";
        let e = spoiled(Layout::Dogs, mat("test_list.mat", list(vec![2.5], &[chi])));
        has(
            &e,
            &["`test_list.mat` entry 1: label 2.5 is not a positive integer"],
        );
        let e = spoiled(Layout::Dogs, mat("test_list.mat", list(vec![2.0], &[chi])));
        has(
            &e,
            &["`test_list.mat` entry 1: label 2 is given to folder `n02085620-Chihuahua`"],
        );
        let e = spoiled(
            Layout::Dogs,
            mat("test_list.mat", list(vec![1.0, 2.0], &[chi])),
        );
        has(
            &e,
            &["`test_list.mat`: file_list has 1 entries but labels has 2"],
        );
        let e = spoiled(
            Layout::Dogs,
            mat("test_list.mat", list(vec![5.0], &["n1/x.jpg"])),
        );
        has(&e, &["label 4 is used by no file"]);

        let e = spoiled(
            Layout::Flowers102,
            mat(
                "imagelabels.mat",
                vec![("labels", MatValue::row(vec![0.0]))],
            ),
        );
        has(
            &e,
            &["`imagelabels.mat` labels(1) is 0, not a positive integer"],
        );
    }

    #[test]
    fn v73_mat_files_are_refused() {
        let v73 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mat/v73_header.mat");
        for (layout, rel) in [
            (Layout::Flowers102, "imagelabels.mat"),
            (Layout::Dogs, "train_list.mat"),
            (Layout::Cars, "devkit/cars_meta.mat"),
        ] {
            let e = spoiled(layout, |root| {
                std::fs::copy(&v73, root.join(rel)).unwrap();
            });
            has(&e, &[&format!("`{rel}`"), "v7.3"]);
        }
    }

    #[test]
    fn layout_names_and_serde() {
        for l in Layout::ALL {
            let s = serde_json::to_value(l).unwrap();
            assert_eq!(s, json!(l.name()));
            assert_eq!(serde_json::from_value::<Layout>(s).unwrap(), l);
            assert!(!l.required_files().is_empty());
        }
    }
}
