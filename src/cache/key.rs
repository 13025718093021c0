//! What goes into a stage's cache key.
//!
//! Key = blake3 over the canonical JSON of a [`KeyRecord`]'s hashed part: `CACHE_VERSION`,
//! the stage kind and its version, the canonicalised params (defaults filled in by the
//! kind, then objects sorted and integral floats written as integers), the digests of the inputs
//! and their matrix values (not their names: renaming an upstream stage keeps the cache,
//! while relabelling a sweep reruns what groups by it), the digests of declared
//! local files, and an allow-list of environment facts that change results (libtorch
//! version, device, threads for torch stages). Nothing else: no absolute paths of the
//! project, no timestamps, no host names, so a moved or shared cache stays valid.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Change this whenever what goes into a key, or how it is encoded, changes: every
/// existing cache entry then misses, which is the point.
/// v2: integral floats are canonicalised as integers (`2.0` and `2` give one key).
/// v3: params are keyed with the kind's defaults filled in (`StageKind::canonical_params`),
/// so writing a default (`split: test`) and leaving it out are one key.
pub const CACHE_VERSION: u32 = 3;

/// One input artifact as recorded beside the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub instance: String,
    pub digest: String,
    /// The upstream instance's matrix values (what `aggregate` groups by).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matrix: BTreeMap<String, Value>,
}

/// Everything a key was computed from, stored in each cache entry so `rst status` can say
/// what changed, and for provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub cache_version: u32,
    pub kind: String,
    pub kind_version: u32,
    /// Canonical form (object keys sorted; serde_json without preserve_order sorts).
    pub params: Value,
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    /// Local file path (as written in params) → content digest.
    pub local_deps: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

type HashedInput<'a> = (&'a str, &'a BTreeMap<String, Value>);

#[derive(Serialize)]
struct Hashed<'a> {
    cache_version: u32,
    kind: &'a str,
    kind_version: u32,
    params: &'a Value,
    /// Input name -> (digest, matrix values) of each artifact.
    inputs: BTreeMap<&'a str, Vec<HashedInput<'a>>>,
    local_deps: &'a BTreeMap<String, String>,
    env: &'a BTreeMap<String, String>,
}

/// Recursively rebuilds a JSON value so that objects are sorted (they already are without
/// serde_json's preserve_order feature; this makes the invariant independent of features).
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        // `2.0` and `2` are the same number: write integral floats as integers.
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n.clone()),
        },
        other => other.clone(),
    }
}

/// Whether `v` is already what [`canonical`] makes of it (objects sorted, no integral
/// floats). The planner's records are, so keying them needs no second copy (a sweep keys
/// a million of them).
fn is_canonical(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b) && m.values().all(is_canonical)
        }
        Value::Array(a) => a.iter().all(is_canonical),
        Value::Number(n) if n.is_f64() => {
            !matches!(n.as_f64(), Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15)
        }
        _ => true,
    }
}

/// [`canonical`] of a value that is given away: returned as it is when already canonical.
pub fn into_canonical(v: Value) -> Value {
    if is_canonical(&v) {
        v
    } else {
        canonical(&v)
    }
}

impl KeyRecord {
    /// The cache key (64 hex chars).
    pub fn key(&self) -> String {
        let rebuilt;
        let params = if is_canonical(&self.params) {
            &self.params
        } else {
            rebuilt = canonical(&self.params);
            &rebuilt
        };
        let hashed = Hashed {
            cache_version: self.cache_version,
            kind: &self.kind,
            kind_version: self.kind_version,
            params,
            inputs: self
                .inputs
                .iter()
                .map(|(k, v)| {
                    let arts = v.iter().map(|r| (r.digest.as_str(), &r.matrix)).collect();
                    (k.as_str(), arts)
                })
                .collect(),
            local_deps: &self.local_deps,
            env: &self.env,
        };
        let bytes = serde_json::to_vec(&hashed).expect("key record serialises");
        let mut h = blake3::Hasher::new();
        h.update(b"rst-stage-key\0");
        h.update(&bytes);
        h.finalize().to_hex().to_string()
    }

    /// Human-readable reasons why `self` (now) differs from `old` (the last cached run).
    pub fn diff(&self, old: &KeyRecord) -> Vec<String> {
        let mut out = Vec::new();
        if self.cache_version != old.cache_version {
            out.push(format!(
                "rst cache version {} -> {}",
                old.cache_version, self.cache_version
            ));
        }
        if self.kind != old.kind || self.kind_version != old.kind_version {
            out.push(format!(
                "stage kind {} v{} -> {} v{}",
                old.kind, old.kind_version, self.kind, self.kind_version
            ));
        }
        let mut a = BTreeMap::new();
        flatten("", &canonical(&old.params), &mut a);
        let mut b = BTreeMap::new();
        flatten("", &canonical(&self.params), &mut b);
        for (k, v) in &b {
            match a.get(k) {
                None => out.push(format!("param {k} added ({v})")),
                Some(o) if o != v => out.push(format!("param {k}: {o} -> {v}")),
                _ => {}
            }
        }
        for k in a.keys().filter(|k| !b.contains_key(*k)) {
            out.push(format!("param {k} removed"));
        }
        for (name, now) in &self.inputs {
            match old.inputs.get(name) {
                None => out.push(format!("input {name} added")),
                Some(before) if before.len() != now.len() => out.push(format!(
                    "input {name}: {} -> {} artifacts",
                    before.len(),
                    now.len()
                )),
                Some(before) => {
                    for (n, o) in now.iter().zip(before) {
                        if n.digest != o.digest {
                            out.push(format!("input {name} ({}) changed", n.instance));
                        }
                    }
                }
            }
        }
        for name in old.inputs.keys().filter(|k| !self.inputs.contains_key(*k)) {
            out.push(format!("input {name} removed"));
        }
        for (path, d) in &self.local_deps {
            if old.local_deps.get(path) != Some(d) {
                out.push(format!("file {path} changed"));
            }
        }
        for (k, v) in &self.env {
            if old.env.get(k) != Some(v) {
                out.push(format!(
                    "environment {k}: {} -> {v}",
                    old.env.get(k).map(String::as_str).unwrap_or("unset")
                ));
            }
        }
        out
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(
                    &if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    },
                    v,
                    out,
                );
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The record of a `command` stage with no params, inputs or environment: a fixture for
/// the store's, the durability journal's and the executors' unit tests.
#[cfg(test)]
pub(crate) fn empty_command_record() -> KeyRecord {
    KeyRecord {
        cache_version: CACHE_VERSION,
        kind: "command".into(),
        kind_version: 1,
        params: serde_json::json!({}),
        inputs: Default::default(),
        local_deps: Default::default(),
        env: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> KeyRecord {
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "data".to_string(),
            vec![InputRecord {
                instance: "split".into(),
                digest: "d1".into(),
                matrix: Default::default(),
            }],
        );
        let mut env = BTreeMap::new();
        env.insert("libtorch".to_string(), "2.13.0".to_string());
        let mut local = BTreeMap::new();
        local.insert("scripts/a.py".to_string(), "f1".to_string());
        KeyRecord {
            cache_version: CACHE_VERSION,
            kind: "noise".into(),
            kind_version: 1,
            params: json!({"rate": 0.4, "seed": 1}),
            inputs,
            local_deps: local,
            env,
        }
    }

    #[test]
    fn a_canonical_value_is_kept_and_any_other_rebuilt() {
        for v in [
            json!({"a": [1.5, 3], "b": {"c": "x", "d": true}}),
            json!({"b": 2.0, "a": [1.5, 3.0]}),
            json!([{"z": 1e3}, null, "s"]),
            json!(7.25),
        ] {
            assert_eq!(into_canonical(v.clone()), canonical(&v), "{v}");
            assert_eq!(
                is_canonical(&v),
                canonical(&v) == v && !has_integral_float(&v)
            );
        }
        assert!(is_canonical(&json!({"a": [1.5, 3], "b": "x"})));
        assert!(!is_canonical(&json!({"b": 2.0})));
        assert!(!is_canonical(&json!([[1e3]])));
    }

    fn has_integral_float(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(has_integral_float),
            Value::Array(a) => a.iter().any(has_integral_float),
            Value::Number(n) => n.is_f64() && n.as_f64().is_some_and(|f| f.fract() == 0.0),
            _ => false,
        }
    }

    /// The key layout, pinned (as sccache's `test_generate_hash_key`): the expected bytes
    /// are rebuilt here input by input, and the digest is pinned as hex, so any change of
    /// what goes into a key, or of its encoding, fails here first. When it is deliberate,
    /// bump CACHE_VERSION and pin the new digest.
    #[test]
    fn golden_key() {
        let mut matrix = BTreeMap::new();
        matrix.insert("rate".to_string(), json!(0.4));
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "data".to_string(),
            vec![InputRecord {
                instance: "noisy[rate=0.4]".into(),
                digest: "ab".repeat(32),
                matrix,
            }],
        );
        // The pin was made with this version: a bump re-pins (every cache entry misses anyway).
        assert_eq!(
            CACHE_VERSION, 3,
            "CACHE_VERSION changed: update this test and its pin"
        );
        let record = KeyRecord {
            cache_version: 3,
            kind: "evaluate".into(),
            kind_version: 1,
            // Unsorted, with an integral float: the key sees `{"batch_size":256,"lr":2,...}`.
            params: serde_json::from_str(r#"{"split": "test", "lr": 2.0, "batch_size": 256}"#)
                .unwrap(),
            inputs,
            local_deps: [("w.pth".to_string(), "cd".repeat(32))].into(),
            env: [
                ("device".to_string(), "cpu".to_string()),
                ("libtorch".to_string(), "2.13.0".to_string()),
                ("threads".to_string(), "1".to_string()),
            ]
            .into(),
        };
        let mut expected = blake3::Hasher::new();
        // Domain separation.
        expected.update(b"rst-stage-key\0");
        // The cache version, then the kind and its version.
        expected.update(br#"{"cache_version":3,"kind":"evaluate","kind_version":1,"#);
        // Params: keys sorted, `2.0` written as `2`.
        expected.update(br#""params":{"batch_size":256,"lr":2,"split":"test"},"#);
        // Inputs by name: (digest, matrix values) per artifact; no instance names.
        let input = format!(
            r#""inputs":{{"data":[["{}",{{"rate":0.4}}]]}},"#,
            "ab".repeat(32)
        );
        expected.update(input.as_bytes());
        // Local files by path: their content digests.
        let local = format!(r#""local_deps":{{"w.pth":"{}"}},"#, "cd".repeat(32));
        expected.update(local.as_bytes());
        // The allow-listed environment facts.
        expected.update(br#""env":{"device":"cpu","libtorch":"2.13.0","threads":"1"}}"#);
        let expected = expected.finalize().to_hex().to_string();
        assert_eq!(record.key(), expected, "the key's layout changed");
        assert_eq!(
            expected, "722e9b1871553ecc580a401a51005961abe07ca11cf5d2e55539e18889218af2",
            "the pinned key changed: bump CACHE_VERSION if this is deliberate"
        );
    }

    #[test]
    fn every_key_input_changes_the_key() {
        let k = base().key();
        let mut r = base();
        r.cache_version += 1;
        assert_ne!(r.key(), k, "cache version");
        let mut r = base();
        r.kind = "split".into();
        assert_ne!(r.key(), k, "kind");
        let mut r = base();
        r.kind_version = 2;
        assert_ne!(r.key(), k, "kind version");
        let mut r = base();
        r.params = json!({"rate": 0.2, "seed": 1});
        assert_ne!(r.key(), k, "params");
        let mut r = base();
        r.inputs.get_mut("data").unwrap()[0].digest = "d2".into();
        assert_ne!(r.key(), k, "input digest");
        let mut r = base();
        let v = r.inputs.remove("data").unwrap();
        r.inputs.insert("other".into(), v);
        assert_ne!(r.key(), k, "input name");
        let mut r = base();
        r.inputs.get_mut("data").unwrap()[0]
            .matrix
            .insert("rate".into(), json!(0.4));
        assert_ne!(r.key(), k, "input matrix values");
        let mut r = base();
        r.local_deps.insert("scripts/a.py".into(), "f2".into());
        assert_ne!(r.key(), k, "local file content");
        let mut r = base();
        r.env.insert("libtorch".into(), "2.14.0".into());
        assert_ne!(r.key(), k, "env fact");
        let mut r = base();
        r.env.insert("device".into(), "cuda".into());
        assert_ne!(r.key(), k, "device");
    }

    #[test]
    fn invariances() {
        let k = base().key();
        // Upstream instance names are provenance, not content.
        let mut r = base();
        r.inputs.get_mut("data").unwrap()[0].instance = "renamed".into();
        assert_eq!(r.key(), k);
        // Param key order does not matter.
        let mut r = base();
        r.params = serde_json::from_str(r#"{"seed": 1, "rate": 0.4}"#).unwrap();
        assert_eq!(r.key(), k);
        // 2.0 and 2 are the same number.
        let mut a = base();
        a.params = json!({"d": 2.0});
        let mut b = base();
        b.params = json!({"d": 2});
        assert_eq!(a.key(), b.key());
        // 1e-1 and 0.1 are the same number.
        let mut a = base();
        a.params = serde_json::from_str(r#"{"rate": 1e-1}"#).unwrap();
        let mut b = base();
        b.params = serde_json::from_str(r#"{"rate": 0.1}"#).unwrap();
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn diff_names_what_changed() {
        let old = base();
        let mut now = base();
        now.params = json!({"rate": 0.2, "seed": 1});
        now.inputs.get_mut("data").unwrap()[0].digest = "d9".into();
        let reasons = now.diff(&old);
        assert!(
            reasons.contains(&"param rate: 0.4 -> 0.2".to_string()),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&"input data (split) changed".to_string()),
            "{reasons:?}"
        );
    }
}
