//! The `split` stage kind: carves named splits out of a dataset's splits, optionally keeping
//! a subset of the classes, and writes them as a *view* over the materialised base dataset
//! (indices and labels only, never pixels).
//!
//! ```yaml
//! params:
//!   seed: 0                        # default 0
//!   classes: [5, 6, 7, 8, 9]       # optional: keep these class ids, relabelled 0..K-1 in this order
//!   splits:                        # ordered; rules reading the same source take disjoint samples
//!     - {name: train, from: train, per_class: 180}
//!     - {name: val,   from: train, per_class: 20}
//!     - {name: test,  from: test}  # no size: everything that remains of `test`
//! ```
//!
//! Per rule at most one size: `per_class: N`, `fraction: F` (0 < F <= 1, of the source's
//! count — per class when stratified — floored like Python's `int(F * n)`), `count: N`
//! (a total), or none (all that remains of the source, every class). `stratify` (default
//! true) takes the size per class; `stratify: false` takes it from the whole source in
//! shuffled order (the paper's Indoor rule: `{name: val, from: train, fraction: 0.1,
//! stratify: false}` then `{name: train, from: train}`). A stratified `count` is shared
//! among the classes in proportion to what remains of each (largest remainder; ties go to
//! the lower class id).
//!
//! Randomness: for each source split, its samples (after the class subset, in the input's
//! order) are shuffled once with `Prng::new(seed, "split/<source>")`. A class's shuffled
//! list is that permutation restricted to the class, so stratified and unstratified rules
//! read one and the same order. Rules hand out samples in list order: each takes the first
//! samples of that order (of each class, when stratified) that no earlier rule took.
//!
//! Order inside an output split: the samples appear in the order of their source's seeded
//! permutation (not grouped by class), so the first samples of a split are a random mix of
//! classes, as in the original code's `permutation[:n_val]`.
//!
//! Labels are the input's labels mapped through the class subset; clean labels (of a noisy
//! input) are carried along and mapped the same way.
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    canonical_as, parse_params, Arity, InputDecl, ParamError, Progress, StageCtx, StageError,
    StageKind, StageRunner, Upstreams,
};
use crate::data::dataset::{write_view, Dataset, LabelSplit};
use crate::names::valid_name;
use crate::prng::Prng;

pub struct Split;

/// Bump when the same inputs and params would give another view (the shuffle, the
/// hand-out order, the output order, the `info` written).
const VERSION: u32 = 1;

const INPUTS: &[InputDecl] = &[InputDecl {
    name: "data",
    arity: Arity::One,
    required: true,
}];

#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitParams {
    /// Seeds the one shuffle of each source split (`Prng::new(seed, "split/<source>")`).
    #[serde(default)]
    pub seed: u64,
    /// Class ids of the input to keep, relabelled 0..K-1 in this order.
    #[serde(default)]
    pub classes: Option<Vec<usize>>,
    /// The output splits, in order; rules reading the same source take disjoint samples.
    pub splits: Vec<SplitRule>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRule {
    pub name: String,
    pub from: String,
    #[serde(default)]
    pub per_class: Option<usize>,
    #[serde(default)]
    pub fraction: Option<f64>,
    #[serde(default)]
    pub count: Option<usize>,
    #[serde(default = "yes")]
    pub stratify: bool,
}

fn yes() -> bool {
    true
}

/// How much a rule takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Size {
    PerClass(usize),
    Fraction(f64),
    Count(usize),
    Rest,
}

impl SplitRule {
    fn size(&self) -> Size {
        match (self.per_class, self.fraction, self.count) {
            (Some(n), _, _) => Size::PerClass(n),
            (_, Some(f), _) => Size::Fraction(f),
            (_, _, Some(n)) => Size::Count(n),
            _ => Size::Rest,
        }
    }

    fn size_json(&self) -> Value {
        match self.size() {
            Size::PerClass(n) => json!({ "per_class": n }),
            Size::Fraction(f) => json!({ "fraction": f }),
            Size::Count(n) => json!({ "count": n }),
            Size::Rest => json!("rest"),
        }
    }
}

/// The semantic checks serde cannot do.
fn validate(p: &SplitParams) -> Result<(), ParamError> {
    if let Some(classes) = &p.classes {
        if classes.is_empty() {
            return Err(ParamError::new("classes", "the class subset is empty")
                .help("leave `classes` out to keep every class"));
        }
        let mut seen = BTreeSet::new();
        for (j, c) in classes.iter().enumerate() {
            if !seen.insert(*c) {
                return Err(ParamError::new(
                    format!("classes[{j}]"),
                    format!("class id {c} is listed twice"),
                ));
            }
        }
    }
    if p.splits.is_empty() {
        return Err(ParamError::new("splits", "no split rules given")
            .help("e.g. `splits: [{name: train, from: train}, {name: test, from: test}]`"));
    }
    let mut names = BTreeSet::new();
    // Sources whose remaining samples an earlier size-less rule took, with that rule's index.
    let mut exhausted: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in p.splits.iter().enumerate() {
        let at = |key: &str| format!("splits[{i}].{key}");
        if !valid_name(&r.name) {
            return Err(ParamError::new(
                at("name"),
                format!(
                    "split name `{}` must be non-empty and use only letters, digits, `_` and `-`",
                    r.name
                ),
            ));
        }
        if !names.insert(r.name.as_str()) {
            return Err(ParamError::new(
                at("name"),
                format!("split `{}` is defined twice", r.name),
            ));
        }
        if r.from.is_empty() {
            return Err(ParamError::new(
                at("from"),
                "the source split name is empty",
            ));
        }
        let given: Vec<&str> = [
            ("per_class", r.per_class.is_some()),
            ("fraction", r.fraction.is_some()),
            ("count", r.count.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, g)| g.then_some(k))
        .collect();
        if given.len() > 1 {
            return Err(ParamError::new(
                at(given[1]),
                format!(
                    "give at most one of per_class, fraction, count (this rule gives {})",
                    given.join(" and ")
                ),
            )
            .help("leave all of them out to take every remaining sample"));
        }
        match r.size() {
            Size::PerClass(0) => {
                return Err(ParamError::new(at("per_class"), "must be at least 1"))
            }
            Size::Count(0) => return Err(ParamError::new(at("count"), "must be at least 1")),
            Size::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(ParamError::new(
                    at("fraction"),
                    format!("must be in (0, 1], got {f}"),
                ));
            }
            Size::PerClass(_) if !r.stratify => {
                return Err(ParamError::new(
                    at("stratify"),
                    "per_class takes samples per class and needs `stratify: true`",
                )
                .help("use `count: N` for a total over the whole source split"));
            }
            _ => {}
        }
        if let Some(&prev) = exhausted.get(r.from.as_str()) {
            return Err(ParamError::new(
                at("from"),
                format!(
                    "splits[{prev}] (`{}`) already takes every remaining sample of `{}`",
                    p.splits[prev].name, r.from
                ),
            )
            .help("put the rule without a size last among the rules reading that source"));
        }
        if r.size() == Size::Rest {
            exhausted.insert(r.from.as_str(), i);
        }
    }
    Ok(())
}

/// Params are checked again at run time (a stage may be run directly); errors there are the
/// user's.
/// The samples of one source split, shuffled, and which of them rules took already.
struct Pool {
    /// The base split the rows index.
    base_split: String,
    /// Positions in the input split, in the seeded shuffled order.
    order: Vec<usize>,
    /// New class id of `order[j]`.
    class: Vec<usize>,
    taken: Vec<bool>,
    /// Samples per new class id, before any rule took any.
    total: Vec<usize>,
}

impl Pool {
    fn remaining(&self, k: usize) -> Vec<usize> {
        let mut r = vec![0; k];
        for (j, &c) in self.class.iter().enumerate() {
            if !self.taken[j] {
                r[c] += 1;
            }
        }
        r
    }

    /// Marks the samples `quota` takes, in the pool's shuffled order; their pool positions.
    fn take(&mut self, quota: &Quota) -> Vec<usize> {
        let mut left = match quota {
            Quota::PerClass(want) => want.clone(),
            _ => Vec::new(),
        };
        let mut left_total = match quota {
            Quota::Total(n) => *n,
            _ => 0,
        };
        let mut picked = Vec::new();
        for j in 0..self.order.len() {
            if self.taken[j] {
                continue;
            }
            let take = match quota {
                Quota::All => true,
                Quota::PerClass(_) => {
                    let c = self.class[j];
                    if left[c] > 0 {
                        left[c] -= 1;
                        true
                    } else {
                        false
                    }
                }
                Quota::Total(_) => {
                    if left_total > 0 {
                        left_total -= 1;
                        true
                    } else {
                        false
                    }
                }
            };
            if take {
                self.taken[j] = true;
                picked.push(j);
            }
        }
        picked
    }
}

/// Shares `n` among classes in proportion to `avail` (largest remainder; ties go to the
/// lower class id). Requires `n <= sum(avail)`.
fn proportional(n: usize, avail: &[usize]) -> Vec<usize> {
    let total: usize = avail.iter().sum();
    if total == 0 {
        return vec![0; avail.len()];
    }
    let mut share: Vec<usize> = avail
        .iter()
        .map(|&a| ((n as u128 * a as u128) / total as u128) as usize)
        .collect();
    let mut left = n - share.iter().sum::<usize>();
    let mut by_remainder: Vec<(u128, usize)> = avail
        .iter()
        .enumerate()
        .map(|(c, &a)| ((n as u128 * a as u128) % total as u128, c))
        .collect();
    by_remainder.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, c) in by_remainder {
        if left == 0 {
            break;
        }
        if share[c] < avail[c] {
            share[c] += 1;
            left -= 1;
        }
    }
    share
}

fn floor_fraction(f: f64, n: usize) -> usize {
    // Python's int(f * n) for 0 < f <= 1.
    ((f * n as f64).floor() as usize).min(n)
}

fn describe_avail(avail: &[usize], classes: &[String]) -> String {
    if avail.iter().all(|&a| Some(&a) == avail.first()) {
        return format!("{} per class", avail.first().copied().unwrap_or(0));
    }
    let items: Vec<String> = avail
        .iter()
        .zip(classes)
        .enumerate()
        .map(|(c, (a, name))| format!("{c}:{name}={a}"))
        .collect();
    items.join(", ")
}

impl StageKind for Split {
    fn params_schema(&self) -> schemars::Schema {
        params_schema()
    }
    fn checks_upstream(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "split"
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        let p: SplitParams = parse_params(params)?;
        validate(&p)
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        Some(INPUTS)
    }
    fn canonical_params(&self, params: &Value) -> Value {
        canonical_as::<SplitParams>(params)
    }
    fn output_splits(&self, params: &Value, _inputs: &Upstreams<'_>) -> Option<Vec<String>> {
        let p: SplitParams = parse_params(params).ok()?;
        Some(p.splits.into_iter().map(|r| r.name).collect())
    }
}

impl StageRunner for Split {
    fn kind(&self) -> &'static dyn StageKind {
        &Split
    }
    /// The phases: check params, open the input, the class subset, one shuffled pool per
    /// source split, then per rule its quota, the samples it takes and their labels, and
    /// last the view written.
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        let p: SplitParams = parse_params(ctx.params).map_err(StageError::from)?;
        validate(&p).map_err(StageError::from)?;
        let input = ctx.dataset_input("data")?;
        let subset = ClassSubset::of(&input, p.classes.as_deref())?;
        let mut pools = make_pools(&input, &p, &subset)?;
        let mut carved = Carved::default();
        for (i, r) in p.splits.iter().enumerate() {
            let pool = pools.get_mut(&r.from).expect("pool made for every source");
            let quota = Quota::of_rule(i, r, pool, &subset.names)?;
            let picked = pool.take(&quota);
            let (split, counts) = labelled_split(&input, r, pool, &picked, &subset)?;
            carved.rules.push(json!({
                "name": r.name,
                "from": r.from,
                "size": r.size_json(),
                "stratify": r.stratify,
                "n": picked.len(),
                "class_counts": counts,
            }));
            carved
                .splits
                .insert(r.name.clone(), (pool.base_split.clone(), split));
            (ctx.progress)(Progress {
                pos: i as u64 + 1,
                len: p.splits.len() as u64,
                message: format!("split {}", r.name),
            });
        }
        write_split_view(ctx, &input, &p, subset.names, carved)
    }
}

/// The classes a split keeps: input id → new id, and the kept classes' names in new-id order.
struct ClassSubset {
    new_id: Vec<Option<usize>>,
    names: Vec<String>,
}

impl ClassSubset {
    /// `classes` (input ids, in their new order), or every class of the input.
    fn of(input: &Dataset, classes: Option<&[usize]>) -> Result<ClassSubset, StageError> {
        let k_in = input.num_classes();
        let kept: Vec<usize> = classes.map_or_else(|| (0..k_in).collect(), <[usize]>::to_vec);
        let mut new_id: Vec<Option<usize>> = vec![None; k_in];
        for (j, &c) in kept.iter().enumerate() {
            if c >= k_in {
                return Err(StageError::user(format!(
                    "params.classes[{j}]: class id {c} does not exist; the input has {k_in} classes (ids 0..{})",
                    k_in.saturating_sub(1)
                )));
            }
            new_id[c] = Some(j);
        }
        let names = kept
            .iter()
            .map(|&c| input.meta.classes[c].clone())
            .collect();
        Ok(ClassSubset { new_id, names })
    }

    fn len(&self) -> usize {
        self.names.len()
    }
}

/// One shuffled pool per source split, in the order the rules first name them.
fn make_pools(
    input: &Dataset,
    p: &SplitParams,
    subset: &ClassSubset,
) -> Result<BTreeMap<String, Pool>, StageError> {
    let mut pools = BTreeMap::new();
    for (i, r) in p.splits.iter().enumerate() {
        if !pools.contains_key(&r.from) {
            let pool = make_pool(input, &r.from, p.seed, &subset.new_id, i)?;
            pools.insert(r.from.clone(), pool);
        }
    }
    Ok(pools)
}

/// What the rules carved out: the new splits (by name, with their base split) and each
/// rule's record for `info.json`.
#[derive(Default)]
struct Carved {
    splits: BTreeMap<String, (String, LabelSplit)>,
    rules: Vec<Value>,
}

/// How many samples a rule takes.
enum Quota {
    /// Every remaining sample.
    All,
    /// So many of each (new) class.
    PerClass(Vec<usize>),
    /// So many in all, whatever their class.
    Total(usize),
}

impl Quota {
    /// Rule `i`'s quota on `pool`, checked against what the earlier rules left.
    fn of_rule(
        i: usize,
        r: &SplitRule,
        pool: &Pool,
        classes: &[String],
    ) -> Result<Quota, StageError> {
        let k = classes.len();
        let avail = pool.remaining(k);
        let avail_total: usize = avail.iter().sum();
        let short = |want: &str, got: String| {
            StageError::user(format!(
                "splits[{i}] (`{}`) asks for {want} of `{}`, but {got}; available after the earlier rules: {}",
                r.name,
                r.from,
                describe_avail(&avail, classes)
            ))
        };
        // Quota per class (stratified) or in total (unstratified).
        let quota = match (r.size(), r.stratify) {
            (Size::Rest, _) => Quota::All,
            (Size::PerClass(n), _) => Quota::PerClass(vec![n; k]),
            (Size::Fraction(f), true) => {
                Quota::PerClass(pool.total.iter().map(|&t| floor_fraction(f, t)).collect())
            }
            (Size::Fraction(f), false) => Quota::Total(floor_fraction(f, pool.total.iter().sum())),
            (Size::Count(n), true) => {
                if n > avail_total {
                    return Err(short(
                        &format!("{n} samples"),
                        format!("only {avail_total} remain"),
                    ));
                }
                Quota::PerClass(proportional(n, &avail))
            }
            (Size::Count(n), false) => Quota::Total(n),
        };
        match &quota {
            Quota::PerClass(want) => {
                let lacking: Vec<String> = (0..k)
                    .filter(|&c| want[c] > avail[c])
                    .map(|c| {
                        format!(
                            "class {c} (`{}`) has {} of the {} wanted",
                            classes[c], avail[c], want[c]
                        )
                    })
                    .collect();
                if !lacking.is_empty() {
                    let what = match r.size() {
                        Size::PerClass(n) => format!("{n} per class"),
                        Size::Fraction(f) => format!("a fraction {f} of each class"),
                        _ => "samples".to_string(),
                    };
                    return Err(short(&what, lacking.join(", ")));
                }
            }
            Quota::Total(n) if *n > avail_total => {
                return Err(short(
                    &format!("{n} samples"),
                    format!("only {avail_total} remain"),
                ));
            }
            _ => {}
        }
        Ok(quota)
    }
}

/// The new split of the `picked` pool positions: base rows, new labels, clean labels mapped
/// through the subset; and its count per new class.
fn labelled_split(
    input: &Dataset,
    r: &SplitRule,
    pool: &Pool,
    picked: &[usize],
    subset: &ClassSubset,
) -> Result<(LabelSplit, Vec<usize>), StageError> {
    let (_, base_index) = input
        .base_rows(&r.from)
        .expect("source checked in make_pool");
    let src = &input.splits[&r.from];
    let mut index = Vec::with_capacity(picked.len());
    let mut split = LabelSplit {
        index: None,
        labels: Vec::with_capacity(picked.len()),
        clean_labels: src
            .clean_labels
            .as_ref()
            .map(|_| Vec::with_capacity(picked.len())),
    };
    let mut counts = vec![0usize; subset.len()];
    for &j in picked {
        let pos = pool.order[j];
        index.push(base_index[pos]);
        split.labels.push(pool.class[j] as i64);
        counts[pool.class[j]] += 1;
        if let (Some(out), Some(clean)) = (split.clean_labels.as_mut(), src.clean_labels.as_ref()) {
            let c = clean[pos];
            let mapped = usize::try_from(c)
                .ok()
                .and_then(|c| subset.new_id.get(c).copied().flatten());
            match mapped {
                Some(m) => out.push(m as i64),
                None => {
                    return Err(StageError::user(format!(
                        "split `{}` row {pos} has clean label {c}, which the class subset drops; take the class subset before adding noise",
                        r.from
                    )))
                }
            }
        }
    }
    split.index = Some(index);
    Ok((split, counts))
}

/// Writes the view: the carved splits over the input's base, with the split's record
/// added to the input's `info`.
fn write_split_view(
    ctx: &StageCtx<'_>,
    input: &Dataset,
    p: &SplitParams,
    classes: Vec<String>,
    carved: Carved,
) -> Result<(), StageError> {
    let mut info = input.meta.info.clone();
    info.insert(
        "split".into(),
        json!({
            "seed": p.seed,
            "classes": p.classes,
            "order": "seeded permutation of the source split",
            "rules": carved.rules,
        }),
    );
    write_view(
        ctx.out,
        input.base_digest(),
        input.meta.image_shape,
        classes,
        carved.splits,
        info,
    )
    .map_err(|e| StageError::internal(format!("writing the split view: {e}")))
}

/// Shuffles the samples of `source` that the class subset keeps.
fn make_pool(
    input: &Dataset,
    source: &str,
    seed: u64,
    new_id: &[Option<usize>],
    rule: usize,
) -> Result<Pool, StageError> {
    let Some(split) = input.splits.get(source) else {
        let names: Vec<&str> = input.splits.keys().map(String::as_str).collect();
        let hint = crate::hint::did_you_mean(source, names.iter().copied())
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return Err(StageError::user(format!(
            "params.splits[{rule}].from: the input has no split `{source}`; it has {}{hint}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let (base_split, _) = input.base_rows(source).expect("split exists");
    let k_in = new_id.len();
    let mut members = Vec::with_capacity(split.labels.len());
    for (pos, &label) in split.labels.iter().enumerate() {
        let c = usize::try_from(label).ok().filter(|&c| c < k_in).ok_or_else(|| {
            StageError::user(format!("split `{source}` row {pos} has label {label}, outside the {k_in} classes of the input"))
        })?;
        if new_id[c].is_some() {
            members.push(pos);
        }
    }
    Prng::new(seed, &format!("split/{source}")).shuffle(&mut members);
    let class: Vec<usize> = members
        .iter()
        .map(|&pos| new_id[split.labels[pos] as usize].unwrap())
        .collect();
    let k = new_id.iter().flatten().count();
    let mut total = vec![0; k];
    for &c in &class {
        total[c] += 1;
    }
    Ok(Pool {
        base_split,
        taken: vec![false; members.len()],
        order: members,
        class,
        total,
    })
}

/// The JSON schema of this kind's `params:` (what the validator deserialises), for the
/// parameter reference (`rst params`).
pub fn params_schema() -> schemars::Schema {
    schemars::schema_for!(SplitParams)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::dataset::{write_materialised, Images, MaterialSplit};
    use crate::stages::{InputArtifact, Inputs};
    use std::path::{Path, PathBuf};

    pub const BASE_DIGEST: &str = "base-digest-0";

    /// 5 classes; train: 20 per class, test: 4 per class; row i has label i % 5 and its
    /// single 1x1x1 pixel is the row number.
    pub fn make_base(dir: &Path) -> PathBuf {
        let base = dir.join("base");
        std::fs::create_dir_all(&base).unwrap();
        let mut splits = BTreeMap::new();
        for (name, n) in [("train", 100usize), ("test", 20usize)] {
            let images = Images::from_list((0..n).map(|i| ([1, 1, 1], vec![i as u8])).collect());
            splits.insert(
                name.to_string(),
                MaterialSplit {
                    images,
                    labels: (0..n).map(|i| (i % 5) as i64).collect(),
                },
            );
        }
        let classes = (0..5).map(|c| format!("c{c}")).collect();
        let mut info = serde_json::Map::new();
        info.insert("source".into(), json!("synthetic"));
        write_materialised(&base, classes, splits, info).unwrap();
        base
    }

    /// Runs `kind` on the artifact at `input` (digest `digest`) into a fresh dir under `dir`.
    pub fn run_stage(
        kind: &dyn StageRunner,
        dir: &Path,
        input: &Path,
        digest: &str,
        params: Value,
    ) -> Result<(PathBuf, Dataset), StageError> {
        let mut inputs: Inputs = BTreeMap::new();
        inputs.insert(
            "data".into(),
            vec![InputArtifact {
                instance: "up".into(),
                digest: digest.into(),
                path: input.to_path_buf(),
                matrix: Default::default(),
            }],
        );
        let out = crate::stages::testing::run_kind(kind, &params, &inputs, dir, dir, 1)?;
        let ds = Dataset::open(&out, &format!("{digest}+{}", kind.kind().name())).unwrap();
        Ok((out, ds))
    }

    fn split(dir: &Path, base: &Path, params: Value) -> Dataset {
        run_stage(&Split, dir, base, BASE_DIGEST, params).unwrap().1
    }

    fn class_counts(ds: &Dataset, split: &str) -> Vec<usize> {
        let mut c = vec![0; ds.num_classes()];
        for &l in &ds.splits[split].labels {
            c[l as usize] += 1;
        }
        c
    }

    fn standard() -> Value {
        json!({"seed": 0, "splits": [
            {"name": "train", "from": "train", "per_class": 12},
            {"name": "val", "from": "train", "per_class": 4},
            {"name": "test", "from": "test"},
        ]})
    }

    #[test]
    fn per_class_counts_are_disjoint_and_point_into_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = split(dir.path(), &base, standard());
        assert_eq!(ds.base_digest(), BASE_DIGEST);
        assert_eq!(ds.meta.image_shape, Some([1, 1, 1]));
        assert_eq!(ds.meta.classes, vec!["c0", "c1", "c2", "c3", "c4"]);
        assert_eq!(class_counts(&ds, "train"), vec![12; 5]);
        assert_eq!(class_counts(&ds, "val"), vec![4; 5]);
        assert_eq!(class_counts(&ds, "test"), vec![4; 5]);
        let train: BTreeSet<i64> = ds.splits["train"]
            .index
            .clone()
            .unwrap()
            .into_iter()
            .collect();
        let val: BTreeSet<i64> = ds.splits["val"]
            .index
            .clone()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(train.len(), 60, "no duplicates");
        assert_eq!(val.len(), 20);
        assert!(train.is_disjoint(&val));
        let test: BTreeSet<i64> = ds.splits["test"]
            .index
            .clone()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            test,
            (0..20).collect(),
            "a size-less rule takes all of its source"
        );
        for (name, source) in [("train", "train"), ("val", "train"), ("test", "test")] {
            let (src, rows) = ds.base_rows(name).unwrap();
            assert_eq!(src, source);
            for (row, label) in rows.iter().zip(&ds.splits[name].labels) {
                assert_eq!(row % 5, *label, "label follows the base row");
            }
            assert_eq!(ds.splits[name].clean_labels, None);
        }
        let rules = &ds.meta.info["split"]["rules"];
        assert_eq!(rules[0]["size"], json!({"per_class": 12}));
        assert_eq!(rules[1]["class_counts"], json!([4, 4, 4, 4, 4]));
        assert_eq!(rules[2]["size"], json!("rest"));
        assert_eq!(
            ds.meta.info["source"],
            json!("synthetic"),
            "the input's info is kept"
        );
    }

    #[test]
    fn class_subset_is_relabelled_in_the_given_order() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = split(
            dir.path(),
            &base,
            json!({"classes": [3, 1], "splits": [
                {"name": "train", "from": "train", "per_class": 5},
                {"name": "test", "from": "test"},
            ]}),
        );
        assert_eq!(ds.meta.classes, vec!["c3", "c1"]);
        assert_eq!(class_counts(&ds, "train"), vec![5, 5]);
        assert_eq!(class_counts(&ds, "test"), vec![4, 4]);
        for name in ["train", "test"] {
            let (_, rows) = ds.base_rows(name).unwrap();
            for (row, label) in rows.iter().zip(&ds.splits[name].labels) {
                assert_eq!(row % 5, [3, 1][*label as usize]);
            }
        }
    }

    #[test]
    fn same_params_give_identical_bytes_and_another_seed_other_indices() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let (a, da) = run_stage(&Split, dir.path(), &base, BASE_DIGEST, standard()).unwrap();
        let (b, _) = run_stage(&Split, dir.path(), &base, BASE_DIGEST, standard()).unwrap();
        for file in ["dataset.json", "labels.safetensors"] {
            assert_eq!(
                std::fs::read(a.join(file)).unwrap(),
                std::fs::read(b.join(file)).unwrap(),
                "{file}"
            );
        }
        let mut other = standard();
        other["seed"] = json!(1);
        let (_, dc) = run_stage(&Split, dir.path(), &base, BASE_DIGEST, other).unwrap();
        assert_ne!(da.splits["train"].index, dc.splits["train"].index);
        let set = |d: &Dataset| {
            d.splits["val"]
                .index
                .clone()
                .unwrap()
                .into_iter()
                .collect::<BTreeSet<_>>()
        };
        assert_ne!(
            set(&da),
            set(&dc),
            "another seed picks other samples, not just another order"
        );
    }

    #[test]
    fn output_order_is_the_seeded_permutation() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = split(
            dir.path(),
            &base,
            json!({"splits": [{"name": "all", "from": "train"}]}),
        );
        let mut members: Vec<i64> = (0..100).collect();
        Prng::new(0, "split/train").shuffle(&mut members);
        assert_eq!(ds.splits["all"].index.as_ref().unwrap(), &members);
    }

    #[test]
    fn unstratified_fraction_then_rest_is_the_indoor_rule() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = split(
            dir.path(),
            &base,
            json!({"splits": [
                {"name": "val", "from": "train", "fraction": 0.1, "stratify": false},
                {"name": "train", "from": "train"},
                {"name": "test", "from": "test"},
            ]}),
        );
        let mut perm: Vec<i64> = (0..100).collect();
        Prng::new(0, "split/train").shuffle(&mut perm);
        assert_eq!(
            ds.splits["val"].index.as_ref().unwrap(),
            &perm[..10],
            "val = first 10% of the permutation"
        );
        assert_eq!(
            ds.splits["train"].index.as_ref().unwrap(),
            &perm[10..],
            "train = the rest"
        );
    }

    #[test]
    fn stratified_fraction_floors_per_class_and_count_is_shared_proportionally() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = split(
            dir.path(),
            &base,
            json!({"splits": [
                // 0.29 * 20 = 5.8 -> 5 per class
                {"name": "a", "from": "train", "fraction": 0.29},
                // 7 of the remaining 15 per class: 2 each, the extra 2 to classes 0 and 1
                {"name": "b", "from": "train", "count": 7},
                {"name": "c", "from": "train", "count": 3, "stratify": false},
            ]}),
        );
        assert_eq!(class_counts(&ds, "a"), vec![5; 5]);
        assert_eq!(class_counts(&ds, "b"), vec![2, 2, 1, 1, 1]);
        assert_eq!(ds.splits["c"].labels.len(), 3);
        assert_eq!(proportional(10, &[5, 0, 15]), vec![3, 0, 7]);
        assert_eq!(proportional(3, &[1, 1, 1, 1]), vec![1, 1, 1, 0]);
        assert_eq!(floor_fraction(0.1, 5360), 536);
    }

    #[test]
    fn asking_for_more_than_remains_says_what_is_available() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let err = run_stage(
            &Split,
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"classes": [0, 2], "splits": [
                {"name": "train", "from": "train", "per_class": 15},
                {"name": "val", "from": "train", "per_class": 6},
            ]}),
        )
        .unwrap_err();
        assert!(err.user);
        assert!(
            err.message
                .contains("splits[1] (`val`) asks for 6 per class of `train`"),
            "{}",
            err.message
        );
        assert!(err.message.contains("5 per class"), "{}", err.message);
        assert!(
            err.message.contains("class 0 (`c0`) has 5 of the 6 wanted"),
            "{}",
            err.message
        );

        let err = run_stage(
            &Split,
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"splits": [
                {"name": "x", "from": "test", "count": 21, "stratify": false},
            ]}),
        )
        .unwrap_err();
        assert!(err.message.contains("only 20 remain"), "{}", err.message);

        let err = run_stage(
            &Split,
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"splits": [{"name": "x", "from": "tran"}]}),
        )
        .unwrap_err();
        assert!(
            err.message.contains("no split `tran`")
                && err.message.contains("did you mean `train`?"),
            "{}",
            err.message
        );

        let err = run_stage(
            &Split,
            dir.path(),
            &base,
            BASE_DIGEST,
            json!({"classes": [7], "splits": [{"name": "x", "from": "train"}]}),
        )
        .unwrap_err();
        assert!(
            err.message.contains("classes[0]") && err.message.contains("5 classes"),
            "{}",
            err.message
        );
    }

    #[test]
    fn splitting_a_view_composes_indices_into_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let (first_dir, first) =
            run_stage(&Split, dir.path(), &base, BASE_DIGEST, standard()).unwrap();
        let (_, second) = run_stage(
            &Split,
            dir.path(),
            &first_dir,
            "view-digest-1",
            json!({"classes": [4, 0], "splits": [
                {"name": "small", "from": "train", "per_class": 3},
            ]}),
        )
        .unwrap();
        assert_eq!(
            second.base_digest(),
            BASE_DIGEST,
            "the base stays the materialised dataset"
        );
        let (src, rows) = second.base_rows("small").unwrap();
        assert_eq!(src, "train");
        let first_train: BTreeSet<i64> = first.splits["train"]
            .index
            .clone()
            .unwrap()
            .into_iter()
            .collect();
        for (row, label) in rows.iter().zip(&second.splits["small"].labels) {
            assert!(first_train.contains(row));
            assert_eq!(row % 5, [4, 0][*label as usize]);
        }
    }

    /// Pinned output. If this changes, the same params give another split: bump VERSION
    /// (and say why) rather than editing the expected numbers.
    #[test]
    fn pinned_output_for_seed_0() {
        let dir = tempfile::tempdir().unwrap();
        let base = make_base(dir.path());
        let ds = split(dir.path(), &base, standard());
        let train = ds.splits["train"].index.as_ref().unwrap();
        let val = ds.splits["val"].index.as_ref().unwrap();
        let test = ds.splits["test"].index.as_ref().unwrap();
        assert_eq!(VERSION, 1);
        assert_eq!(&train[..8], PINNED_TRAIN, "train {:?}", &train[..8]);
        assert_eq!(&val[..8], PINNED_VAL, "val {:?}", &val[..8]);
        assert_eq!(&test[..8], PINNED_TEST, "test {:?}", &test[..8]);
    }
    const PINNED_TRAIN: &[i64] = &[26, 79, 53, 16, 50, 63, 68, 12];
    const PINNED_VAL: &[i64] = &[24, 62, 75, 11, 0, 9, 22, 47];
    const PINNED_TEST: &[i64] = &[0, 15, 4, 10, 17, 1, 2, 5];

    fn check_err(params: Value) -> ParamError {
        Split.check(&params).unwrap_err()
    }

    #[test]
    fn check_reports_key_paths_and_hints() {
        assert!(Split.check(&standard()).is_ok());
        let e = check_err(json!({"splits": [{"name": "a", "from": "train", "per_clas": 3}]}));
        assert_eq!(
            e.help.as_deref(),
            Some("did you mean `per_class`?"),
            "{e:?}"
        );
        assert!(e.path.starts_with("splits[0]"), "{e:?}");
        let e = check_err(json!({"sed": 1, "splits": [{"name": "a", "from": "train"}]}));
        assert_eq!(e.help.as_deref(), Some("did you mean `seed`?"), "{e:?}");
        let e = check_err(json!({"splits": [{"name": "a", "from": "train", "per_class": "x"}]}));
        assert_eq!(e.path, "splits[0].per_class");
        let e = check_err(
            json!({"splits": [{"name": "a", "from": "train", "per_class": 3}, {"name": "b", "from": "train", "per_class": 3, "count": 4}]}),
        );
        assert_eq!(e.path, "splits[1].count");
        let e = check_err(
            json!({"splits": [{"name": "a", "from": "train"}, {"name": "b", "from": "train", "fraction": 1.5}]}),
        );
        assert_eq!(e.path, "splits[1].fraction");
        let e = check_err(json!({"splits": [{"name": "a", "from": "train", "fraction": 0.0}]}));
        assert_eq!(e.path, "splits[0].fraction");
        let e = check_err(
            json!({"splits": [{"name": "a", "from": "train"}, {"name": "b", "from": "train", "per_class": 2}]}),
        );
        assert_eq!(e.path, "splits[1].from");
        let e = check_err(
            json!({"splits": [{"name": "a", "from": "train", "per_class": 2}, {"name": "a", "from": "test"}]}),
        );
        assert_eq!(e.path, "splits[1].name");
        let e = check_err(json!({"splits": [{"name": "a.b", "from": "train"}]}));
        assert_eq!(e.path, "splits[0].name");
        let e = check_err(json!({"splits": [{"name": "a", "from": "train", "per_class": 0}]}));
        assert_eq!(e.path, "splits[0].per_class");
        let e = check_err(
            json!({"splits": [{"name": "a", "from": "train", "per_class": 2, "stratify": false}]}),
        );
        assert_eq!(e.path, "splits[0].stratify");
        let e =
            check_err(json!({"classes": [1, 2, 1], "splits": [{"name": "a", "from": "train"}]}));
        assert_eq!(e.path, "classes[2]");
        let e = check_err(json!({"classes": [], "splits": [{"name": "a", "from": "train"}]}));
        assert_eq!(e.path, "classes");
        let e = check_err(json!({"splits": []}));
        assert_eq!(e.path, "splits");
        let e = check_err(json!({"seed": 0}));
        assert!(e.message.contains("splits"), "{e:?}");
    }

    #[test]
    fn declares_one_required_data_input() {
        let decl = Split.inputs().unwrap();
        assert_eq!(decl.len(), 1);
        assert_eq!(
            (decl[0].name, decl[0].arity, decl[0].required),
            ("data", Arity::One, true)
        );
        assert_eq!((Split.name(), Split.version()), ("split", 1));
    }
}
