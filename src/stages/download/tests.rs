use super::*;
use crate::data::archive::tests::{tar_bytes, zip_bytes};
use crate::data::dataset::{load_images, Dataset};
use crate::data::idx::tests::{gzip, idx_bytes};
use crate::stages::Inputs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    fetch::hex(&sha2::Sha256::digest(bytes))
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        for d in ["project", "downloads"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Env { dir }
    }
    fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }
    fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }
    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.project().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }
    /// Checks and runs the stage; returns the artifact directory.
    fn run(&self, params: Value) -> Result<PathBuf, StageError> {
        Download.check(&params).map_err(param_to_stage)?;
        let out = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
        let work = tempfile::tempdir_in(self.dir.path()).unwrap();
        let inputs = Inputs::new();
        let resolve = |_: &str| -> Option<PathBuf> { None };
        let progress = |_: Progress| {};
        let downloads = self.downloads();
        let project = self.project();
        let ctx = StageCtx {
            instance: "download",
            params: &params,
            inputs: &inputs,
            out: &out,
            work: work.path(),
            downloads: &downloads,
            project_dir: &project,
            threads: 2,
            resolve: &resolve,
            progress: &progress,
        };
        Download.run(&ctx).map(|()| out)
    }
}

// ---- params ----

fn check_err(params: Value) -> ParamError {
    Download.check(&params).unwrap_err()
}

#[test]
fn param_errors_name_the_key() {
    let e = check_err(json!({"files": [{"name": "a", "sha256": "abc", "mirrors": ["a"]}]}));
    assert_eq!(e.path, "files[0].sha256");
    let e = check_err(json!({"files": [{"name": "a", "mirrors": ["a", "ftp://x.org/a"]}]}));
    assert_eq!(e.path, "files[0].mirrors[1]");
    assert!(e.help.is_some());
    let e = check_err(json!({"files": []}));
    assert_eq!(e.path, "files");
    let e = check_err(json!({"files": [{"name": "a", "mirrors": []}]}));
    assert_eq!(e.path, "files[0].mirrors");
    let e = check_err(json!({"files": [{"name": "a/b", "mirrors": ["x"]}]}));
    assert_eq!(e.path, "files[0].name");
    let e = check_err(
        json!({"files": [{"name": "a", "mirrors": ["x"]}, {"name": "a", "mirrors": ["y"]}]}),
    );
    assert_eq!(e.path, "files[1].name");
    let e = check_err(json!({"files": [{"name": "a", "mirors": ["x"]}]}));
    assert_eq!(e.help.as_deref(), Some("did you mean `mirrors`?"));
    let e = check_err(json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "idx"}));
    assert_eq!(e.path, "idx");
    let e = check_err(
        json!({"files": [{"name": "a", "mirrors": ["x"]}], "idx": {"train_images": "a", "train_labels": "a", "test_images": "a", "test_labels": "a"}}),
    );
    assert_eq!(e.path, "idx");
    let files = json!([{"name": "train-images.gz", "mirrors": ["x"]}, {"name": "labels.gz", "mirrors": ["x"]}]);
    let e = check_err(
        json!({"files": files, "format": "idx", "idx": {"train_images": "train-imgs.gz", "train_labels": "labels.gz", "test_images": "labels.gz", "test_labels": "labels.gz"}}),
    );
    assert_eq!(e.path, "idx.train_images");
    assert_eq!(e.help.as_deref(), Some("did you mean `train-images.gz`?"));
    let e = check_err(
        json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "image-folder", "image_folder": {"root": "../x"}}),
    );
    assert_eq!(e.path, "image_folder.root");
    let e = check_err(
        json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "image-folder", "image_folder": {"root": "x", "train_list": "t"}}),
    );
    assert_eq!(e.path, "image_folder.test_list");
    let e = check_err(json!({"files": [{"name": "a", "mirrors": ["x"]}], "format": "images"}));
    assert_eq!(e.path, "format");
    Download
        .check(&json!({"files": [{"name": "a", "sha256": "A".repeat(64), "mirrors": ["x", "file:///x", "https://e.org/x"]}]}))
        .unwrap();
}

#[test]
fn local_deps_are_first_local_mirrors_of_unpinned_files() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    for name in ["a", "b", "c", "d", "e2"] {
        std::fs::write(at(name), name).unwrap();
    }
    let p = json!({"files": [
        {"name": "a", "mirrors": [at("a"), "https://e.org/a"]},
        {"name": "b", "sha256": "0".repeat(64), "mirrors": [at("b")]},
        {"name": "c", "mirrors": ["https://e.org/c", at("c")]},
        {"name": "d", "mirrors": [format!("file://{}", at("d"))]},
        {"name": "e", "mirrors": [at("missing"), at("e2"), "https://e.org/e"]},
        {"name": "f", "mirrors": [at("missing"), "https://e.org/f", at("a")]},
    ]});
    assert_eq!(Download.local_deps(&p), vec![at("a"), at("d"), at("e2")]);
    assert_eq!(Download.inputs().map(|i| i.len()), Some(0));
}

// ---- local sources ----

#[test]
fn checksum_mismatch_names_file_source_and_digests() {
    let env = Env::new();
    env.write("data/a.bin", b"actual content");
    let wrong = sha(b"other content");
    let e = env
        .run(json!({"files": [{"name": "a.bin", "sha256": wrong, "mirrors": ["data/a.bin"]}]}))
        .unwrap_err();
    assert!(e.user);
    for needle in [
        "files[0] (a.bin)",
        "data/a.bin",
        &wrong,
        &sha(b"actual content"),
        "mismatch",
    ] {
        assert!(
            e.message.contains(needle),
            "missing {needle}: {}",
            e.message
        );
    }
}

#[test]
fn mirrors_fall_back_in_order() {
    let env = Env::new();
    env.write("bad/a.bin", b"corrupted");
    let good = env.write("good/a.bin", b"the real thing");
    let pin = sha(b"the real thing");
    let out = env
        .run(json!({"files": [{"name": "a.bin", "sha256": pin, "mirrors": ["missing/a.bin", "bad/a.bin", format!("file://{}", good.display())]}]}))
        .unwrap();
    assert_eq!(
        std::fs::read(out.join("files/a.bin")).unwrap(),
        b"the real thing"
    );
    assert!(good.exists(), "user data is never moved");

    let e = env.run(json!({"files": [{"name": "a.bin", "sha256": pin, "mirrors": ["missing/a.bin", "bad/a.bin"]}]})).unwrap_err();
    assert!(
        e.message.contains("missing/a.bin: not found"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("bad/a.bin: sha256 mismatch"),
        "{}",
        e.message
    );
}

#[test]
fn raw_unpacks_tar_gz_and_zip_and_copies_directories() {
    let env = Env::new();
    let files: &[(&str, &[u8])] = &[("d/a.txt", b"alpha"), ("b.txt", b"beta")];
    env.write("x.tar.gz", &gzip(&tar_bytes(files, &[])));
    env.write("y.zip", &zip_bytes(files));
    env.write("tree/sub/c.txt", b"gamma");
    env.write("plain.gz", &gzip(b"stays compressed"));
    #[cfg(unix)]
    std::os::unix::fs::symlink("sub/c.txt", env.project().join("tree/link")).unwrap();
    let out = env
        .run(json!({"files": [
            {"name": "x.tar.gz", "mirrors": ["x.tar.gz"]},
            {"name": "y.zip", "mirrors": ["y.zip"]},
            {"name": "tree", "mirrors": ["tree"]},
            {"name": "plain.gz", "mirrors": ["plain.gz"]},
        ]}))
        .unwrap();
    for a in ["x.tar.gz", "y.zip"] {
        assert_eq!(
            std::fs::read(out.join(format!("files/{a}/d/a.txt"))).unwrap(),
            b"alpha"
        );
        assert_eq!(
            std::fs::read(out.join(format!("files/{a}/b.txt"))).unwrap(),
            b"beta"
        );
    }
    assert_eq!(
        std::fs::read(out.join("files/tree/sub/c.txt")).unwrap(),
        b"gamma"
    );
    assert!(
        std::fs::symlink_metadata(out.join("files/tree/link")).is_err(),
        "symlinks are not copied"
    );
    assert_eq!(
        std::fs::read(out.join("files/plain.gz")).unwrap(),
        gzip(b"stays compressed")
    );
}

#[test]
fn escaping_tar_entry_is_a_user_error() {
    let env = Env::new();
    env.write(
        "evil.tar",
        &tar_bytes(&[("fine.txt", b"x"), ("../evil", b"x")], &[]),
    );
    let e = env
        .run(json!({"files": [{"name": "evil.tar", "mirrors": ["evil.tar"]}]}))
        .unwrap_err();
    assert!(
        e.user && e.message.contains("`../evil`") && e.message.contains("escapes"),
        "{}",
        e.message
    );
    assert!(!env.dir.path().join("evil").exists());
}

// ---- idx ----

fn idx_params(classes: Option<Vec<&str>>) -> Value {
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let mut idx = json!({"train_images": names[0], "train_labels": names[1], "test_images": names[2], "test_labels": names[3]});
    if let Some(c) = classes {
        idx["classes"] = json!(c);
    }
    json!({
        "files": names.iter().map(|n| json!({"name": n, "mirrors": [format!("fmnist/{n}")]})).collect::<Vec<_>>(),
        "format": "idx",
        "idx": idx,
    })
}

#[test]
fn idx_pair_becomes_a_dataset() {
    let env = Env::new();
    env.write(
        "fmnist/train-images-idx3-ubyte.gz",
        &gzip(&idx_bytes(&[3, 2, 2], &(0..12).collect::<Vec<u8>>())),
    );
    env.write(
        "fmnist/train-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[3], &[0, 2, 1])),
    );
    env.write(
        "fmnist/t10k-images-idx3-ubyte.gz",
        &idx_bytes(&[2, 2, 2], &[9; 8]),
    );
    env.write(
        "fmnist/t10k-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[2], &[1, 1])),
    );
    let out = env.run(idx_params(None)).unwrap();
    let ds = Dataset::open(&out, "d").unwrap();
    assert_eq!(ds.meta.classes, vec!["0", "1", "2"]);
    assert_eq!(ds.meta.image_shape, Some([2, 2, 1]));
    assert_eq!(ds.splits["train"].labels, vec![0, 2, 1]);
    assert_eq!(ds.splits["test"].labels, vec![1, 1]);
    let train = load_images(&out, "train").unwrap();
    assert_eq!(train.get(2), ([2, 2, 1], &[8u8, 9, 10, 11][..]));
    let files = ds.meta.info["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(files[0]["sha256"].as_str().unwrap().len(), 64);

    let out = env.run(idx_params(Some(vec!["a", "b", "c", "d"]))).unwrap();
    assert_eq!(
        Dataset::open(&out, "d").unwrap().meta.classes,
        vec!["a", "b", "c", "d"]
    );
    let e = env.run(idx_params(Some(vec!["a", "b"]))).unwrap_err();
    assert!(
        e.user && e.message.contains("out of range"),
        "{}",
        e.message
    );

    env.write(
        "fmnist/t10k-labels-idx1-ubyte.gz",
        &idx_bytes(&[3], &[1, 1, 0]),
    );
    let e = env.run(idx_params(None)).unwrap_err();
    assert!(
        e.user && e.message.contains("2 images") && e.message.contains("3 labels"),
        "{}",
        e.message
    );
}

// ---- image folder ----

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut v = std::io::Cursor::new(Vec::new());
    img.write_to(&mut v, image::ImageFormat::Png).unwrap();
    v.into_inner()
}

fn jpeg(img: image::DynamicImage) -> Vec<u8> {
    let mut v = std::io::Cursor::new(Vec::new());
    img.write_to(&mut v, image::ImageFormat::Jpeg).unwrap();
    v.into_inner()
}

fn image_tree(env: &Env) {
    let rgb = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        3,
        2,
        image::Rgb([200, 10, 10]),
    ));
    let grey =
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 4, image::Luma([77])));
    env.write("indoor/Images/kitchen/k1.png", &png(rgb.clone()));
    env.write("indoor/Images/kitchen/k2.jpg", &jpeg(rgb));
    env.write("indoor/Images/bar/b1.png", &png(grey));
    env.write(
        "indoor/Images/bar/broken.jpg",
        b"\xff\xd8\xff\xe0 not really a jpeg",
    );
    env.write("indoor/Images/bar/readme.txt", b"ignored");
    env.write(
        "lists/TrainImages.txt",
        b"kitchen/k1.png\nbar/broken.jpg\nbar/b1.png\n",
    );
    env.write("lists/TestImages.txt", b"kitchen/k2.jpg\n");
}

fn folder_params(lists: bool, on_corrupt: &str) -> Value {
    let mut files = vec![json!({"name": "indoor", "mirrors": ["indoor"]})];
    let mut spec = json!({"root": "Images", "on_corrupt": on_corrupt});
    if lists {
        files.push(json!({"name": "TrainImages.txt", "mirrors": ["lists/TrainImages.txt"]}));
        files.push(json!({"name": "TestImages.txt", "mirrors": ["lists/TestImages.txt"]}));
        spec["train_list"] = json!("TrainImages.txt");
        spec["test_list"] = json!("TestImages.txt");
    }
    json!({"files": files, "format": "image-folder", "image_folder": spec})
}

#[test]
fn image_folder_with_lists_decodes_to_rgb_and_skips_corrupt() {
    let env = Env::new();
    image_tree(&env);
    let out = env.run(folder_params(true, "skip")).unwrap();
    let ds = Dataset::open(&out, "d").unwrap();
    assert_eq!(ds.meta.classes, vec!["bar", "kitchen"]);
    assert_eq!(
        ds.splits["train"].labels,
        vec![0, 1],
        "bar/b1.png, kitchen/k1.png; broken skipped"
    );
    assert_eq!(ds.splits["test"].labels, vec![1]);
    let train = load_images(&out, "train").unwrap();
    let (shape, px) = train.get(0);
    assert_eq!(shape, [4, 2, 3]);
    assert!(px.iter().all(|&v| v == 77), "grey repeated over 3 channels");
    assert_eq!(train.get(1), ([2, 3, 3], &[200u8, 10, 10].repeat(6)[..]));
    assert_eq!(load_images(&out, "test").unwrap().get(0).0, [2, 3, 3]);
    let skipped = ds.meta.info["image_folder"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["file"], "bar/broken.jpg");

    let e = env.run(folder_params(true, "error")).unwrap_err();
    assert!(
        e.user && e.message.contains("bar/broken.jpg"),
        "{}",
        e.message
    );

    env.write("lists/TestImages.txt", b"kitchen/k3.jpg\n");
    let e = env.run(folder_params(true, "skip")).unwrap_err();
    assert!(
        e.user && e.message.contains("kitchen/k3.jpg") && e.message.contains("line 1"),
        "{}",
        e.message
    );
}

#[test]
fn image_folder_from_an_archive_without_lists_is_one_split() {
    let env = Env::new();
    image_tree(&env);
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all("Images", env.project().join("indoor/Images"))
        .unwrap();
    env.write("indoor.tar.gz", &gzip(&b.into_inner().unwrap()));
    let params = json!({
        "files": [{"name": "indoor.tar.gz", "mirrors": ["indoor.tar.gz"]}],
        "format": "image-folder",
        "image_folder": {"root": "Images"},
    });
    let out = env.run(params).unwrap();
    let ds = Dataset::open(&out, "d").unwrap();
    assert_eq!(ds.splits.keys().collect::<Vec<_>>(), vec!["all"]);
    assert_eq!(
        ds.splits["all"].labels,
        vec![0, 1, 1],
        "bar/b1, kitchen/k1, kitchen/k2"
    );
    assert_eq!(ds.meta.info["image_folder"]["ignored_files"], 1);
}

// ---- http ----

struct Server {
    url: String,
    /// The Range header of each request (None: no Range).
    requests: Arc<Mutex<Vec<Option<String>>>>,
}

/// Serves `body` at /file over HTTP/1.1. With `honor_range`, `Range: bytes=N-` gets a 206;
/// otherwise every answer is a 200 with the whole body. The first `drops` connections
/// are closed halfway through the body.
fn serve(body: Vec<u8>, honor_range: bool, drops: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/file", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut range = None;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("range") {
                        range = Some(v.trim().to_string());
                    }
                }
            }
            log.lock().unwrap().push(range.clone());
            let start = range.filter(|_| honor_range).and_then(|r| {
                r.strip_prefix("bytes=")?
                    .strip_suffix('-')?
                    .parse::<usize>()
                    .ok()
            });
            let (status, slice, extra) = match start {
                Some(s) if s < body.len() => (
                    "206 Partial Content",
                    &body[s..],
                    format!(
                        "Content-Range: bytes {s}-{}/{}\r\n",
                        body.len() - 1,
                        body.len()
                    ),
                ),
                Some(_) => (
                    "416 Range Not Satisfiable",
                    &body[..0],
                    format!("Content-Range: bytes */{}\r\n", body.len()),
                ),
                None => ("200 OK", &body[..], String::new()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                slice.len()
            );
            let cut = if n < drops {
                slice.len() / 2
            } else {
                slice.len()
            };
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&slice[..cut]);
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    Server { url, requests }
}

fn body() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[test]
fn http_download_resumes_a_dropped_connection() {
    let env = Env::new();
    let data = body();
    let server = serve(data.clone(), true, 1);
    let out = env
        .run(
            json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [server.url]}]}),
        )
        .unwrap();
    assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0], None);
    let resumed_at: usize = requests[1]
        .as_deref()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(resumed_at > 0 && resumed_at < data.len(), "{requests:?}");
    assert_eq!(
        std::fs::read_dir(env.downloads()).unwrap().count(),
        0,
        "the partial file moved into the artifact"
    );
}

#[test]
fn http_download_resumes_a_partial_file_from_an_earlier_run() {
    let env = Env::new();
    let data = body();
    std::fs::write(
        env.downloads().join(format!("{}.part", sha(&data))),
        &data[..1000],
    )
    .unwrap();
    let server = serve(data.clone(), true, 0);
    let out = env
        .run(
            json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [server.url]}]}),
        )
        .unwrap();
    assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
    assert_eq!(
        *server.requests.lock().unwrap(),
        vec![Some("bytes=1000-".to_string())]
    );
}

#[test]
fn http_server_ignoring_range_restarts_from_zero() {
    let env = Env::new();
    let data = body();
    let server = serve(data.clone(), false, 1);
    let out = env
        .run(
            json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [server.url]}]}),
        )
        .unwrap();
    assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
    assert_eq!(server.requests.lock().unwrap().len(), 2);
}

#[test]
fn http_without_pin_prints_the_digest_and_keeps_the_download() {
    let env = Env::new();
    let data = body();
    let server = serve(data.clone(), true, 0);
    let e = env
        .run(json!({"files": [{"name": "blob.bin", "mirrors": ["missing.bin", server.url]}]}))
        .unwrap_err();
    assert!(e.user);
    let digest = sha(&data);
    assert!(
        e.message.contains(&format!(
            "add  sha256: \"{digest}\"  to files[0] (blob.bin)"
        )),
        "{}",
        e.message
    );

    let out = env
        .run(json!({"files": [{"name": "blob.bin", "sha256": digest, "mirrors": [server.url]}]}))
        .unwrap();
    assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
    assert_eq!(
        server.requests.lock().unwrap().len(),
        1,
        "pinning does not refetch"
    );
}

#[test]
fn http_mismatch_falls_back_to_the_next_mirror() {
    let env = Env::new();
    let data = body();
    let wrong = serve(b"not the file".to_vec(), true, 0);
    env.write("copy.bin", &data);
    let out = env
        .run(json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [wrong.url, "copy.bin"]}]}))
        .unwrap();
    assert_eq!(std::fs::read(out.join("files/blob.bin")).unwrap(), data);
    let e = env
        .run(json!({"files": [{"name": "blob.bin", "sha256": sha(&data), "mirrors": [wrong.url]}]}))
        .unwrap_err();
    assert!(
        e.message.contains(&sha(b"not the file")) && e.message.contains(&wrong.url),
        "{}",
        e.message
    );
}

/// Defaults are filled in before keying, and the bounds on how a fetch may go are not keyed:
/// writing `format: raw` or leaving it out, or raising `attempts`, is the same stage.
#[test]
fn canonical_params_fill_defaults_and_drop_the_bounds() {
    use crate::stages::StageKind as _;
    let plain = serde_json::json!({"files": [{"name": "a", "mirrors": ["file:///x"]}]});
    let written = serde_json::json!({
        "files": [{"name": "a", "mirrors": ["file:///x"], "hash_in_name": false}],
        "format": "raw",
        "attempts": 9,
        "idle_timeout_s": 5.0,
        "max_unpack_ratio": 10.0
    });
    let k = super::Download;
    assert_eq!(k.canonical_params(&plain), k.canonical_params(&written));
    let other = serde_json::json!({"files": [{"name": "b", "mirrors": ["file:///x"]}]});
    assert_ne!(k.canonical_params(&plain), k.canonical_params(&other));
    assert!(k.canonical_params(&written).get("attempts").is_none());
}
