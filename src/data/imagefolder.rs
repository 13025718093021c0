//! Image-folder datasets: one folder per class under a root (`root/<class>/.../<image>`).
//! Class ids are the positions of the folder names in byte-wise sorted order. Images are
//! chosen either by scanning every class folder (JPEG/PNG by extension) or by official list
//! files whose lines name images relative to the root (`kitchen/img_001.jpg`).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::data::archive::safe_relative;
use crate::data::error::DataError;

/// One image to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root, `/`-separated, as listed or found.
    pub rel: String,
    pub path: PathBuf,
    pub label: usize,
}

/// What a folder scan found besides images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Files without a .jpg/.jpeg/.png extension (not read).
    pub ignored: Vec<String>,
}

fn io_user(what: impl std::fmt::Display, e: std::io::Error) -> DataError {
    DataError::read(what)(e)
}

fn utf8_name(name: std::ffi::OsString, dir: &Path) -> Result<String, DataError> {
    name.into_string().map_err(|n| {
        DataError::invalid(format!("{}: file name {:?} is not UTF-8", dir.display(), n))
    })
}

/// The class folder names under `root`, sorted byte-wise (hidden folders are ignored).
pub fn class_names(root: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root)
        .map_err(|e| io_user(format!("cannot list {}", root.display()), e))?
    {
        let entry = entry.map_err(|e| io_user(format!("cannot list {}", root.display()), e))?;
        let name = utf8_name(entry.file_name(), root)?;
        if name.starts_with('.') {
            continue;
        }
        // Follows a symbolic link: only user directories read in place can contain any.
        if entry.path().metadata().map(|m| m.is_dir()).unwrap_or(false) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// Every JPEG/PNG (by extension) under each class folder, recursively, sorted by path.
pub fn scan(root: &Path, classes: &[String]) -> Result<(Vec<Entry>, ScanReport), DataError> {
    let mut entries = Vec::new();
    let mut report = ScanReport::default();
    for (label, class) in classes.iter().enumerate() {
        let mut stack = vec![(root.join(class), class.clone())];
        while let Some((dir, rel_dir)) = stack.pop() {
            let listing = std::fs::read_dir(&dir)
                .map_err(|e| io_user(format!("cannot list {}", dir.display()), e))?;
            for entry in listing {
                let entry =
                    entry.map_err(|e| io_user(format!("cannot list {}", dir.display()), e))?;
                let name = utf8_name(entry.file_name(), &dir)?;
                if name.starts_with('.') {
                    continue;
                }
                let rel = format!("{rel_dir}/{name}");
                let file_type = entry
                    .file_type()
                    .map_err(|e| io_user(format!("cannot stat {}", entry.path().display()), e))?;
                if file_type.is_dir() {
                    stack.push((entry.path(), rel));
                } else if entry
                    .path()
                    .metadata()
                    .map(|m| m.is_file())
                    .unwrap_or(false)
                    && is_image_name(&name)
                {
                    entries.push(Entry {
                        rel,
                        path: entry.path(),
                        label,
                    });
                } else {
                    report.ignored.push(rel);
                }
            }
        }
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    report.ignored.sort();
    Ok((entries, report))
}

/// The images a list file names (one `class/.../file` per line, relative to `root`), sorted
/// by path. `shown` names the list in messages. A line naming a folder that is not a class,
/// or a file that does not exist, is a user error.
pub fn read_list(
    list: &Path,
    shown: &str,
    root: &Path,
    classes: &[String],
) -> Result<Vec<Entry>, DataError> {
    let text = std::fs::read(list)
        .map_err(|e| io_user(format!("cannot read list {shown} ({})", list.display()), e))?;
    let text = String::from_utf8(text)
        .map_err(|_| DataError::invalid(format!("list {shown} is not UTF-8 text")))?;
    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("list {shown} line {}", no + 1);
        let rel = line.replace('\\', "/");
        let Some(rel_path) = safe_relative(Path::new(&rel)).filter(|p| p.components().count() >= 2)
        else {
            return Err(DataError::invalid(format!(
                "{at}: `{line}` is not a path of the form <class>/<file> relative to the root"
            )));
        };
        let class = rel_path
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        let Some(label) = classes.iter().position(|c| c == class) else {
            let hint = crate::hint::did_you_mean(class, classes.iter().map(String::as_str))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(DataError::invalid(format!(
                "{at}: `{class}` is not a class folder under the root{hint}"
            )));
        };
        let path = root.join(&rel_path);
        if !path.metadata().map(|m| m.is_file()).unwrap_or(false) {
            return Err(DataError::invalid(format!(
                "{at}: `{line}` does not exist ({} is missing)",
                path.display()
            )));
        }
        if seen.insert(rel.clone()) {
            entries.push(Entry { rel, path, label });
        }
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(entries)
}

/// A decoded image: shape `[H, W, 3]` and RGB bytes.
pub type Decoded = ([usize; 3], Vec<u8>);

/// Decodes a JPEG or PNG (format from the content) to RGB u8: grey gains three equal
/// channels, alpha is dropped, 16-bit samples are scaled to 8 bits.
pub fn decode_rgb(path: &Path) -> Result<Decoded, String> {
    let reader = image::ImageReader::open(path).map_err(|e| e.to_string())?;
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    let img = reader.decode().map_err(|e| e.to_string())?;
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err("image has no pixels".into());
    }
    Ok(([h as usize, w as usize, 3], rgb.into_raw()))
}

/// Decodes `paths` on a pool of `threads` threads, in order, each resized so its shorter
/// side is `resize` when given; `done` is called after each.
pub fn decode_all(
    paths: &[&Path],
    threads: usize,
    resize: Option<usize>,
    done: &(dyn Fn() + Sync),
) -> Result<Vec<Result<Decoded, String>>, DataError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("rst-decode-{i}"))
        .build()
        .map_err(DataError::Threads)?;
    Ok(pool.install(|| {
        paths
            .par_iter()
            .map(|p| {
                let r = decode_rgb(p).map(|([h, w, c], px)| match resize {
                    Some(short) => {
                        let (h, w, px) = crate::data::transform::resize_shorter(px, h, w, short);
                        ([h, w, c], px)
                    }
                    None => ([h, w, c], px),
                });
                done();
                r
            })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/cmyk.jpg` was written by Pillow 13.0 (a CMYK JPEG, as a few MIT
    /// Indoor images are):
    /// `im = Image.new('RGB', (12, 8)); im.load()[x, y] = (x*20, y*30, 128) for all x, y;
    /// im.convert('CMYK').save('cmyk.jpg', quality=95)`.
    #[test]
    fn cmyk_jpeg_decodes_to_rgb() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmyk.jpg");
        let ([h, w, c], px) = decode_rgb(&path).unwrap();
        assert_eq!((h, w, c), (8, 12, 3));
        for (y, x) in [(0usize, 0usize), (7, 11), (3, 6)] {
            let p = &px[(y * w + x) * 3..(y * w + x) * 3 + 3];
            let want = [(x * 20) as i32, (y * 30) as i32, 128];
            for ch in 0..3 {
                assert!(
                    (p[ch] as i32 - want[ch]).abs() <= 24,
                    "pixel ({y}, {x}) = {p:?}, want about {want:?}"
                );
            }
        }
    }

    #[test]
    fn scan_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (p, data) in [
            ("b/x/2.png", &b"."[..]),
            ("b/1.JPG", b"."),
            ("a/z.png", b"."),
            ("a/notes.txt", b"."),
        ] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        std::fs::create_dir(root.join(".hidden")).unwrap();
        let classes = class_names(root).unwrap();
        assert_eq!(classes, vec!["a", "b"]);
        let (entries, report) = scan(root, &classes).unwrap();
        let rels: Vec<_> = entries.iter().map(|e| (e.rel.as_str(), e.label)).collect();
        assert_eq!(rels, vec![("a/z.png", 0), ("b/1.JPG", 1), ("b/x/2.png", 1)]);
        assert_eq!(report.ignored, vec!["a/notes.txt"]);

        std::fs::write(root.join("list.txt"), "b/1.JPG\r\n\na/z.png\n").unwrap();
        let listed = read_list(&root.join("list.txt"), "list.txt", root, &classes).unwrap();
        assert_eq!(
            listed.iter().map(|e| e.rel.as_str()).collect::<Vec<_>>(),
            vec!["a/z.png", "b/1.JPG"]
        );
        for (line, needle) in [
            ("a/missing.png", "does not exist"),
            ("c/z.png", "not a class"),
            ("../a/z.png", "not a path"),
            ("z.png", "not a path"),
        ] {
            std::fs::write(root.join("bad.txt"), format!("{line}\n")).unwrap();
            let e = read_list(&root.join("bad.txt"), "bad.txt", root, &classes).unwrap_err();
            assert!(
                e.is_user() && e.render().contains(needle) && e.render().contains("line 1"),
                "{e}"
            );
        }
    }
}
