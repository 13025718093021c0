//! Loads PyTorch `.pth` state dicts (torchvision weights) written by `torch.save` in its zip
//! format, directly in Rust.
//!
//! The archive is `<name>/data.pkl` (a pickle, protocol 2 in practice) plus one raw
//! little-endian storage per `<name>/data/<key>`. Tensors in the pickle are
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls whose storage is
//! a persistent id `('storage', torch.FloatStorage, key, location, numel)`.
//!
//! Why not libtorch's own loader: tch 0.26 wraps `torch::jit::_load_parameters`
//! (`Tensor::loadz_multi`), which reads a zip `torch.save` of a *plain* dict but not of an
//! `OrderedDict` (what `Module::state_dict()` returns and every torchvision checkpoint is): its
//! unpickler yields `None` and the call fails with an internal assert. `torch::pickle_load` is
//! not wrapped by tch. Pickle crates: `serde-pickle` drops globals and persistent ids, so it
//! cannot represent tensors; `repugnant-pickle` is a 0.0.1 release; `candle-core`'s pickle
//! reader would pull a whole ML framework in. So this module runs a small, restricted pickle
//! machine itself: it never executes anything, only recognises the few callables a state dict
//! uses (`OrderedDict`, `_rebuild_tensor_v2`, `_rebuild_parameter`, ...) and keeps any other
//! call as an opaque value, which is then reported as "not a state dict". The zip side uses the
//! `zip` crate.
//!
//! Tensors that share a storage in the file share it after loading too (as with `torch.load`),
//! and keep their sizes, strides and storage offset.

// Nothing in the binary calls the loader yet (a later issue wires it in).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

/// Loads the state dict in `path` (a zip-format `torch.save` file) as `(name, tensor)` pairs in
/// the file's order, on the CPU.
pub fn load_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>, String> {
    let shown = path.display();
    let err = |msg: String| format!("{shown}: {msg}");
    let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        err(format!(
            "not a zip-format torch.save file ({e}); files from torch < 1.6 \
             (legacy format) must be re-saved with a recent torch.save"
        ))
    })?;
    // The pickle is `<prefix>/data.pkl` with one top-level folder (any name).
    let pkl_name = archive
        .file_names()
        .filter(|n| {
            n.strip_suffix("data.pkl")
                .is_some_and(|p| p.is_empty() || (p.ends_with('/') && p.matches('/').count() == 1))
        })
        .map(str::to_owned)
        .min_by_key(|n| n.len())
        .ok_or_else(|| err("zip archive has no `<name>/data.pkl`: not a torch.save file".into()))?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_owned();
    if let Some(order) = read_entry(&mut archive, &format!("{prefix}byteorder"), 64)
        .map_err(&err)?
        .filter(|b| b.trim_ascii() != b"little")
    {
        return Err(err(format!(
            "unsupported byte order {:?} (only little-endian storages are supported)",
            String::from_utf8_lossy(&order)
        )));
    }
    if cfg!(target_endian = "big") {
        return Err(err(
            "loading .pth files is only supported on little-endian hosts".into(),
        ));
    }
    let pkl = read_entry(&mut archive, &pkl_name, 1 << 30)
        .map_err(&err)?
        .ok_or_else(|| err(format!("cannot read {pkl_name}")))?;
    let root = Unpickler::new(&pkl)
        .run()
        .map_err(|e| err(format!("{pkl_name}: bad or unsupported pickle: {e}")))?;
    let entries = match root {
        Value::Dict(entries) => entries,
        other => {
            return Err(err(format!(
                "not a state dict: the pickled object is {}, not a dict of tensors",
                other.describe()
            )))
        }
    };
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let name = match key {
            Value::Str(s) => s,
            other => {
                return Err(err(format!(
                    "not a state dict: a key is {}, not a string",
                    other.describe()
                )))
            }
        };
        let spec = match value {
            Value::Tensor(spec) => spec,
            other => {
                return Err(err(format!(
                    "not a state dict: entry {name:?} is {}, not a tensor",
                    other.describe()
                )))
            }
        };
        let storage = match storages.get(&spec.storage.key) {
            Some(t) => t.shallow_clone(),
            None => {
                let t = load_storage(&mut archive, &prefix, &spec.storage).map_err(&err)?;
                storages.insert(spec.storage.key.clone(), t.shallow_clone());
                t
            }
        };
        let tensor = view(&storage, &spec).map_err(|e| err(format!("tensor {name:?}: {e}")))?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// Reads a whole zip entry (None when absent), refusing entries larger than `limit` bytes.
fn read_entry(
    archive: &mut zip::ZipArchive<File>,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, String> {
    let mut entry = match archive.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("cannot read {name} in the zip archive: {e}")),
    };
    if entry.size() > limit {
        return Err(format!("{name} is too large ({} bytes)", entry.size()));
    }
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {name} in the zip archive: {e}"))?;
    Ok(Some(buf))
}

/// Reads storage `<prefix>data/<key>` as a 1-D tensor of `numel` elements.
fn load_storage(
    archive: &mut zip::ZipArchive<File>,
    prefix: &str,
    storage: &StorageRef,
) -> Result<Tensor, String> {
    let name = format!("{prefix}data/{}", storage.key);
    let expected = storage
        .numel
        .checked_mul(storage.kind.elt_size_in_bytes() as u64)
        .ok_or_else(|| format!("storage {name}: size overflows"))?;
    let bytes = read_entry(archive, &name, expected)?
        .ok_or_else(|| format!("storage {name} is missing from the archive"))?;
    if bytes.len() as u64 != expected {
        return Err(format!(
            "storage {name} has {} bytes, expected {expected} ({} x {:?})",
            bytes.len(),
            storage.numel,
            storage.kind
        ));
    }
    Tensor::f_from_data_size(&bytes, &[storage.numel as i64], storage.kind)
        .map_err(|e| format!("storage {name}: {e}"))
}

/// The tensor `spec` as a view of its storage, after checking it lies within the storage.
fn view(storage: &Tensor, spec: &TensorSpec) -> Result<Tensor, String> {
    if spec.size.len() != spec.stride.len() {
        return Err(format!(
            "size {:?} and stride {:?} differ in length",
            spec.size, spec.stride
        ));
    }
    if spec.offset < 0 || spec.size.iter().chain(&spec.stride).any(|&v| v < 0) {
        return Err(format!(
            "negative size, stride or offset (size {:?}, stride {:?}, offset {})",
            spec.size, spec.stride, spec.offset
        ));
    }
    let numel = spec.storage.numel as i64;
    if !spec.size.contains(&0) {
        let last = spec
            .size
            .iter()
            .zip(&spec.stride)
            .try_fold(spec.offset, |acc, (&n, &s)| {
                (n - 1).checked_mul(s).and_then(|d| acc.checked_add(d))
            });
        match last {
            Some(last) if last < numel => {}
            _ => {
                return Err(format!(
                    "size {:?}, stride {:?}, offset {} exceed its storage of {numel} elements",
                    spec.size, spec.stride, spec.offset
                ))
            }
        }
    }
    storage
        .f_as_strided(&spec.size[..], &spec.stride[..], Some(spec.offset))
        .map_err(|e| e.to_string())
}

#[derive(Clone, Debug, PartialEq)]
struct StorageRef {
    key: String,
    kind: Kind,
    numel: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct TensorSpec {
    storage: StorageRef,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The values the restricted unpickler builds. Containers have value semantics (the memo holds
/// copies), which is enough for state dicts: they never mutate a memoised container later.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// A dict or `collections.OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A global reference `module.name` (never resolved to code).
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorSpec),
    /// The result of calling a global this loader does not know.
    Opaque(String),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) => "an int".into(),
            Value::Float(_) => "a float".into(),
            Value::Str(_) => "a string".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(d) => {
                let keys: Vec<String> = d
                    .iter()
                    .take(5)
                    .map(|(k, _)| match k {
                        Value::Str(s) => format!("{s:?}"),
                        other => other.describe(),
                    })
                    .collect();
                format!(
                    "a dict (keys {}{})",
                    keys.join(", "),
                    if d.len() > 5 { ", ..." } else { "" }
                )
            }
            Value::Global(m, n) => format!("the global {m}.{n}"),
            Value::Storage(_) => "a bare storage".into(),
            Value::Tensor(_) => "a tensor".into(),
            Value::Opaque(what) => format!("an object built by {what}"),
        }
    }
}

fn storage_kind(module: &str, name: &str) -> Result<Kind, String> {
    let kind = match (module, name) {
        ("torch", "FloatStorage") => Kind::Float,
        ("torch", "DoubleStorage") => Kind::Double,
        ("torch", "HalfStorage") => Kind::Half,
        ("torch", "BFloat16Storage") => Kind::BFloat16,
        ("torch", "LongStorage") => Kind::Int64,
        ("torch", "IntStorage") => Kind::Int,
        ("torch", "ShortStorage") => Kind::Int16,
        ("torch", "CharStorage") => Kind::Int8,
        ("torch", "ByteStorage") | ("torch", "UntypedStorage") => Kind::Uint8,
        ("torch", "BoolStorage") => Kind::Bool,
        ("torch", "ComplexFloatStorage") => Kind::ComplexFloat,
        ("torch", "ComplexDoubleStorage") => Kind::ComplexDouble,
        _ => return Err(format!("unsupported dtype: storage type {module}.{name}")),
    };
    Ok(kind)
}

/// A restricted pickle machine (protocols 2 to 5, the opcodes `torch.save` emits and a few
/// more). Nothing is ever imported or executed.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated pickle (wanted {n} bytes at offset {})", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle (unterminated line)")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "non-UTF-8 text line")?;
        self.pos += n + 1;
        Ok(s.to_owned())
    }

    fn utf8(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?;
        Ok(Value::Str(
            String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 string")?,
        ))
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("stack underflow (pop past a mark)".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("no mark on the stack")?;
        if m > self.stack.len() {
            return Err("mark past the top of the stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&self, i: u32) -> Result<Value, String> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo key {i} not found"))
    }

    fn memo_put(&mut self, i: u32) -> Result<(), String> {
        let v = self.stack.last().ok_or("stack underflow")?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v.into()))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v.into()))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(format!("integer of {n} bytes is too large"));
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        other => return Err(format!("APPEND to {}", other.describe())),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        other => return Err(format!("APPENDS to {}", other.describe())),
                    }
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let mut d = Vec::new();
                    dict_extend(&mut d, items)?;
                    self.stack.push(Value::Dict(d));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => dict_set(d, k, v),
                        other => return Err(format!("SETITEM on {}", other.describe())),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::Dict(d) => dict_extend(d, items)?,
                        other => return Err(format!("SETITEMS on {}", other.describe())),
                    }
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    let v = self.memo_get(i.into())?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid)?;
                    self.stack.push(v);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = match args {
                        Value::Tuple(a) => a,
                        other => {
                            return Err(format!("call with {} as arguments", other.describe()))
                        }
                    };
                    let v = call(callable, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state (e.g. an OrderedDict's `_metadata`
                    // attribute): not needed for the tensors, so it is dropped.
                    self.pop()?;
                    self.top()?;
                }
                _ => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{op:02x} at offset {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn dict_set(d: &mut Vec<(Value, Value)>, k: Value, v: Value) {
    match d.iter_mut().find(|(key, _)| *key == k) {
        Some(slot) => slot.1 = v,
        None => d.push((k, v)),
    }
}

fn dict_extend(d: &mut Vec<(Value, Value)>, items: Vec<Value>) -> Result<(), String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        dict_set(d, k, v);
    }
    Ok(())
}

/// `torch.save`'s persistent ids: `('storage', storage_type, key, location, numel)`.
fn persistent_load(pid: Value) -> Result<Value, String> {
    let bad = |pid: &Value| format!("unsupported persistent id {pid:?}");
    let Value::Tuple(items) = &pid else {
        return Err(bad(&pid));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(module, name), key, Value::Str(_location), Value::Int(numel)]
            if tag == "storage" && *numel >= 0 =>
        {
            let key = match key {
                Value::Str(k) => k.clone(),
                Value::Int(k) => k.to_string(),
                _ => return Err(bad(&pid)),
            };
            if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
                return Err(format!("invalid storage key {key:?}"));
            }
            Ok(Value::Storage(StorageRef {
                key,
                kind: storage_kind(module, name)?,
                numel: *numel as u64,
            }))
        }
        _ => Err(bad(&pid)),
    }
}

fn int_list(v: &Value, what: &str) -> Result<Vec<i64>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                other => Err(format!("{what} holds {}, not an int", other.describe())),
            })
            .collect(),
        other => Err(format!(
            "{what} is {}, not a tuple of ints",
            other.describe()
        )),
    }
}

/// Applies a REDUCE/NEWOBJ: only the callables a state dict needs mean something.
fn call(callable: Value, mut args: Vec<Value>) -> Result<Value, String> {
    let Value::Global(module, name) = callable else {
        return Err(format!("call of {}", callable.describe()));
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(format!("{module}.{name} with {} arguments", args.len()));
            }
            let storage = match &args[0] {
                Value::Storage(s) => s.clone(),
                other => return Err(format!("{name} on {}, not a storage", other.describe())),
            };
            let offset = match &args[1] {
                Value::Int(i) => *i,
                other => return Err(format!("storage offset is {}", other.describe())),
            };
            let size = int_list(&args[2], "size")?;
            let stride = int_list(&args[3], "stride")?;
            Ok(Value::Tensor(TensorSpec {
                storage,
                offset,
                size,
                stride,
            }))
        }
        // `nn.Parameter`s saved as such: (data, requires_grad, backward_hooks[, state]).
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state")
            if !args.is_empty() && matches!(args[0], Value::Tensor(_)) =>
        {
            Ok(args.swap_remove(0))
        }
        // Tensor subclasses / tensors with a `__dict__`: (func, type, args, state).
        ("torch._tensor", "_rebuild_from_type_v2") if args.len() >= 3 => {
            let inner = match args.swap_remove(2) {
                Value::Tuple(a) => a,
                other => return Err(format!("{name} with {} as arguments", other.describe())),
            };
            call(args.swap_remove(0), inner)
        }
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

#[cfg(test)]
mod tests {
    //! Reference values come from PyTorch 2.13 via `tests/fixtures/pth/make_fixture.py`
    //! (`.venv/bin/python tests/fixtures/pth/make_fixture.py` rewrites `small.pth` and
    //! `small.json`).
    use super::*;
    use serde_json::Value as Json;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pth")
            .join(name)
    }

    fn kind_name(k: Kind) -> &'static str {
        match k {
            Kind::Float => "float32",
            Kind::Half => "float16",
            Kind::BFloat16 => "bfloat16",
            Kind::Int64 => "int64",
            _ => "other",
        }
    }

    #[test]
    fn pth_loads_small_state_dict_like_torch() {
        let sd = load_state_dict(&fixture("small.pth")).unwrap();
        let reference: Vec<Json> =
            serde_json::from_str(&std::fs::read_to_string(fixture("small.json")).unwrap()).unwrap();
        let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
        let ref_names: Vec<&str> = reference
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ref_names);
        for ((name, t), r) in sd.iter().zip(&reference) {
            let ints = |key: &str| -> Vec<i64> {
                r[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect()
            };
            assert_eq!(kind_name(t.kind()), r["dtype"].as_str().unwrap(), "{name}");
            assert_eq!(t.size(), ints("shape"), "{name}");
            assert_eq!(t.stride(), ints("stride"), "{name}");
            assert_eq!(
                t.storage_offset(),
                r["storage_offset"].as_i64().unwrap(),
                "{name}"
            );
            let flat = t.flatten(0, -1);
            let bits_kind = match t.kind() {
                Kind::Float => Kind::Int,
                Kind::Half | Kind::BFloat16 => Kind::Int16,
                k => k,
            };
            let bits = flat.contiguous().view_dtype(bits_kind).to_kind(Kind::Int64);
            assert_eq!(Vec::<i64>::try_from(&bits).unwrap(), ints("bits"), "{name}");
            // The values too, within f64 parsing (serde_json may be 1 ulp off).
            let got = Vec::<f64>::try_from(&flat.to_kind(Kind::Double)).unwrap();
            for (g, w) in got.iter().zip(r["values"].as_array().unwrap()) {
                let w = w.as_f64().unwrap();
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{name}: {g} vs {w}"
                );
            }
        }
        // Views of one storage still share it, as after torch.load.
        let get = |n: &str| &sd.iter().find(|(k, _)| k == n).unwrap().1;
        let (a, b) = (get("fc.bias"), get("layer1.0.downsample.1.bias"));
        assert_eq!(b.data_ptr() as usize - a.data_ptr() as usize, 4 * 4);
    }

    #[test]
    fn pth_bad_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        // Not a zip.
        let p = dir.path().join("junk.pth");
        std::fs::write(&p, b"\x80\x02not a zip at all").unwrap();
        let e = load_state_dict(&p).unwrap_err();
        assert!(e.contains("junk.pth") && e.contains("not a zip"), "{e}");
        // Missing file.
        let e = load_state_dict(&dir.path().join("missing.pth")).unwrap_err();
        assert!(
            e.contains("missing.pth") && e.contains("cannot open"),
            "{e}"
        );
        // A zip whose data.pkl is truncated / not a dict / has an unsupported dtype.
        let write_zip = |name: &str, pkl: &[u8]| {
            let p = dir.path().join(name);
            let mut z = zip::ZipWriter::new(File::create(&p).unwrap());
            let opts = zip::write::SimpleFileOptions::default();
            z.start_file("archive/data.pkl", opts).unwrap();
            std::io::Write::write_all(&mut z, pkl).unwrap();
            z.finish().unwrap();
            p
        };
        let e =
            load_state_dict(&write_zip("trunc.pth", b"\x80\x02}q\x00(X\x01\x00\x00")).unwrap_err();
        assert!(e.contains("trunc.pth") && e.contains("truncated"), "{e}");
        let e = load_state_dict(&write_zip("list.pth", b"\x80\x02]q\x00.")).unwrap_err();
        assert!(
            e.contains("list.pth") && e.contains("not a state dict"),
            "{e}"
        );
        let e = load_state_dict(&write_zip(
            "nested.pth",
            b"\x80\x02}X\x01\x00\x00\x00aK\x01s.",
        ))
        .unwrap_err();
        assert!(e.contains("not a state dict") && e.contains("\"a\""), "{e}");
        let e = load_state_dict(&write_zip(
            "dtype.pth",
            b"\x80\x02}X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nQUInt8Storage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00)))tRs.",
        ))
        .unwrap_err();
        assert!(
            e.contains("dtype.pth") && e.contains("unsupported dtype"),
            "{e}"
        );
        // Storage missing from the archive.
        let e = load_state_dict(&write_zip(
            "nostorage.pth",
            b"\x80\x02}X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00(K\x01t(K\x01ttRs.",
        ))
        .unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
