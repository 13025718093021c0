//! A small reader (and a smaller writer) for MATLAB Level 5 MAT-files (`-v5`, `-v6` and
//! `-v7`; not `-v7.3`, which is HDF5).
//!
//! Stanford Cars, Stanford Dogs and Oxford Flowers-102 ship their annotations as MAT-files
//! holding struct arrays, cell arrays of char and numeric arrays, some in compressed
//! (`miCOMPRESSED`) elements. The Rust crates that exist either read only numeric arrays
//! or would add a dependency for a few hundred lines of format, so the subset needed is
//! written out here, following the MathWorks "MAT-File Format" document (version 7):
//!
//! * the 128-byte header: descriptive text, subsystem offset, version 0x0100 and the
//!   endian indicator (`IM`: little-endian, `MI`: big-endian);
//! * data elements with an 8-byte tag (type, byte count; data padded to 8 bytes) or the
//!   4-byte "small element" tag (type and count packed in the first word, ≤ 4 data bytes);
//! * `miCOMPRESSED` elements (a zlib stream holding one element);
//! * `miMATRIX` elements: array flags, dimensions, name, then by class: numeric (double,
//!   single, int8..uint64 and logical, the data possibly stored in a smaller type than the
//!   class, e.g. a double array stored as miUINT8), char (miUINT8/miUINT16/miUTF8/miUTF16/
//!   miUTF32 data), cell and struct. Sparse arrays, objects and function handles are read
//!   as [`MatValue::Other`] so that a file holding one still opens.
//!
//! All arrays keep MATLAB's column-major element order and their dimensions. Errors are
//! plain messages (the caller names the file); malformed input never panics.
use crate::data::error::DataError;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// One MATLAB array.
#[derive(Debug, Clone, PartialEq)]
pub enum MatValue {
    /// A numeric or logical array, converted to f64 (int64 values beyond 2^53 lose
    /// precision). `imag` is the imaginary part of a complex array.
    Num {
        dims: Vec<usize>,
        data: Vec<f64>,
        imag: Option<Vec<f64>>,
    },
    /// A char array. `text` holds its characters in column-major order: for a row
    /// (`1×N`, the usual case) that is the string. See [`MatValue::as_str`].
    Char { dims: Vec<usize>, text: String },
    /// A cell array, items in column-major order.
    Cell {
        dims: Vec<usize>,
        items: Vec<MatValue>,
    },
    /// A struct array: field names in file order, one map per element (column-major).
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        items: Vec<BTreeMap<String, MatValue>>,
    },
    /// An array of a class this reader does not decode (sparse, object, function handle…):
    /// the MATLAB class number (5 sparse, 3 object, 16 function, …).
    Other { class: u8 },
}

impl MatValue {
    /// A `1×N` double row vector.
    pub fn row(data: Vec<f64>) -> MatValue {
        MatValue::Num {
            dims: vec![1, data.len()],
            data,
            imag: None,
        }
    }

    /// An `N×1` double column vector.
    pub fn column(data: Vec<f64>) -> MatValue {
        MatValue::Num {
            dims: vec![data.len(), 1],
            data,
            imag: None,
        }
    }

    /// A `1×N` char array.
    pub fn text(s: &str) -> MatValue {
        MatValue::Char {
            dims: vec![1, s.chars().count()],
            text: s.to_string(),
        }
    }

    /// The dimensions (empty for [`MatValue::Other`]).
    pub fn dims(&self) -> &[usize] {
        match self {
            MatValue::Num { dims, .. }
            | MatValue::Char { dims, .. }
            | MatValue::Cell { dims, .. }
            | MatValue::Struct { dims, .. } => dims,
            MatValue::Other { .. } => &[],
        }
    }

    /// The number of elements (product of the dimensions).
    pub fn len(&self) -> usize {
        self.dims().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A short description for messages: `1×3 cell`, `2×1 double`, …
    pub fn describe(&self) -> String {
        let kind = match self {
            MatValue::Num { .. } => "numeric",
            MatValue::Char { .. } => "char",
            MatValue::Cell { .. } => "cell",
            MatValue::Struct { .. } => "struct",
            MatValue::Other { class } => return format!("unsupported array (class {class})"),
        };
        let dims: Vec<String> = self.dims().iter().map(|d| d.to_string()).collect();
        format!("{} {kind}", dims.join("×"))
    }

    /// The string of a char array with at most one row (`1×N`, `0×0`, `N×1` with N ≤ 1),
    /// or None for anything else. Multi-row char arrays: use [`MatValue::char_rows`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MatValue::Char { dims, text } if dims.first().copied().unwrap_or(0) <= 1 => Some(text),
            MatValue::Char { dims, text } if dims.len() == 2 && dims[1] <= 1 => Some(text),
            _ => None,
        }
    }

    /// The rows of a 2-D char array (each row as a string, trailing spaces kept).
    pub fn char_rows(&self) -> Option<Vec<String>> {
        let MatValue::Char { dims, text } = self else {
            return None;
        };
        if dims.len() != 2 {
            return None;
        }
        let chars: Vec<char> = text.chars().collect();
        let (rows, cols) = (dims[0], dims[1]);
        if chars.len() != rows * cols {
            return None;
        }
        Some(
            (0..rows)
                .map(|r| (0..cols).map(|c| chars[c * rows + r]).collect())
                .collect(),
        )
    }

    /// The real values of a numeric array.
    pub fn as_nums(&self) -> Option<&[f64]> {
        match self {
            MatValue::Num { data, .. } => Some(data),
            _ => None,
        }
    }

    /// The single value of a 1-element numeric array.
    pub fn as_scalar(&self) -> Option<f64> {
        match self.as_nums() {
            Some([x]) => Some(*x),
            _ => None,
        }
    }
}

// Data types (MAT-file format, table 1-1).
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

// Array classes (table 1-3).
const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_OBJECT: u8 = 3;
const MX_CHAR: u8 = 4;
const MX_DOUBLE: u8 = 6;
const MX_UINT64: u8 = 15;

const FLAG_COMPLEX: u32 = 0x0800;

/// Deepest nesting of cells/structs accepted (guards the recursion on crafted files).
const MAX_DEPTH: usize = 64;
/// Most elements of a struct array without fields (which take no bytes in the file).
const MAX_FIELDLESS: usize = 1 << 20;
/// Largest decompressed size of one compressed element.
const MAX_INFLATED: u64 = 1 << 32;

/// Reads every variable of a Level 5 MAT-file. A v7.3 (HDF5) file, a Level 4 file or
/// anything else is refused with a message saying what it is.
pub fn read_mat(path: &Path) -> Result<BTreeMap<String, MatValue>, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::read("cannot read"))?;
    parse_mat(&bytes)
}

/// [`read_mat`] on bytes in memory.
pub fn parse_mat(bytes: &[u8]) -> Result<BTreeMap<String, MatValue>, DataError> {
    parse_file(bytes).map_err(DataError::Invalid)
}

/// The parser: its messages say what in the file is wrong (the file's name is the caller's).
fn parse_file(bytes: &[u8]) -> Result<BTreeMap<String, MatValue>, String> {
    if bytes.len() >= 8 && bytes[..8] == *b"\x89HDF\r\n\x1a\n" {
        return Err(v73_message());
    }
    if bytes.len() < 128 {
        return Err(format!(
            "not a MATLAB MAT-file: {} bytes, shorter than the 128-byte header",
            bytes.len()
        ));
    }
    let text = String::from_utf8_lossy(&bytes[..116]);
    let hdf5_at_512 = bytes.len() >= 520 && bytes[512..520] == *b"\x89HDF\r\n\x1a\n";
    if text.starts_with("MATLAB 7.3") || hdf5_at_512 {
        return Err(v73_message());
    }
    if !text.starts_with("MATLAB") {
        return Err(
            "not a MATLAB Level 5 MAT-file (the header does not start with `MATLAB`; \
             Level 4 files are not supported)"
                .into(),
        );
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(format!(
                "bad MAT-file header: endian indicator {:?}, expected `IM` or `MI`",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let version = read_u16(&bytes[124..126], big);
    if version == 0x0200 {
        return Err(v73_message());
    }
    if version != 0x0100 {
        return Err(format!(
            "unsupported MAT-file version 0x{version:04x} (only Level 5, 0x0100, is read)"
        ));
    }
    let mut vars = BTreeMap::new();
    let mut r = Reader {
        buf: &bytes[128..],
        pos: 0,
        big,
        base: 128,
    };
    while r.pos < r.buf.len() {
        if r.buf.len() - r.pos < 8 && r.buf[r.pos..].iter().all(|&b| b == 0) {
            break; // trailing padding
        }
        let at = r.base + r.pos;
        let el = r
            .element()
            .map_err(|e| format!("data element at byte {at}: {e}"))?;
        let (name, value) = match el.ty {
            MI_MATRIX => matrix(el.data, big, 0, at + 8)
                .map_err(|e| format!("variable at byte {at}: {e}"))?,
            MI_COMPRESSED => {
                let inflated = inflate(el.data)
                    .map_err(|e| format!("compressed element at byte {at}: {e}"))?;
                let mut inner = Reader {
                    buf: &inflated,
                    pos: 0,
                    big,
                    base: 0,
                };
                let el = inner
                    .element()
                    .map_err(|e| format!("compressed element at byte {at}: {e}"))?;
                if el.ty != MI_MATRIX {
                    continue; // not a variable (the format allows nothing else; skip)
                }
                matrix(el.data, big, 0, 8)
                    .map_err(|e| format!("compressed variable at byte {at}: {e}"))?
            }
            _ => continue,
        };
        vars.insert(name, value);
    }
    Ok(vars)
}

fn v73_message() -> String {
    "this is a MATLAB v7.3 MAT-file (HDF5), which is not supported; re-save it in MATLAB \
     with `save(file, '-v7')` or use the official file"
        .into()
}

fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    Ok(out)
}

fn read_u16(b: &[u8], big: bool) -> u16 {
    let a = [b[0], b[1]];
    if big {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn read_u32(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

struct Element<'a> {
    ty: u32,
    data: &'a [u8],
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
    /// Offset of `buf` in the file (for messages).
    base: usize,
}

impl<'a> Reader<'a> {
    fn element(&mut self) -> Result<Element<'a>, String> {
        let rest = &self.buf[self.pos..];
        if rest.len() < 8 {
            return Err(format!(
                "truncated data element tag at byte {}",
                self.base + self.pos
            ));
        }
        let first = read_u32(&rest[..4], self.big);
        if first >> 16 != 0 {
            // Small data element: type in the low half, byte count in the high half.
            let ty = first & 0xffff;
            let n = (first >> 16) as usize;
            if n > 4 {
                return Err(format!(
                    "small data element at byte {} claims {n} bytes (at most 4)",
                    self.base + self.pos
                ));
            }
            self.pos += 8;
            return Ok(Element {
                ty,
                data: &rest[4..4 + n],
            });
        }
        let ty = first;
        let n = read_u32(&rest[4..8], self.big) as usize;
        if n > rest.len() - 8 {
            return Err(format!(
                "data element at byte {} claims {n} bytes but only {} remain (truncated file?)",
                self.base + self.pos,
                rest.len() - 8
            ));
        }
        let data = &rest[8..8 + n];
        // Compressed elements are not padded; everything else is padded to 8 bytes.
        let padded = if ty == MI_COMPRESSED {
            n
        } else {
            n.div_ceil(8) * 8
        };
        self.pos += (8 + padded).min(rest.len());
        Ok(Element { ty, data })
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Decodes the contents of an miMATRIX element into (name, value). `at` is the offset of
/// `data` for messages.
fn matrix(data: &[u8], big: bool, depth: usize, at: usize) -> Result<(String, MatValue), String> {
    if depth > MAX_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_DEPTH} levels"));
    }
    if data.is_empty() {
        // An empty miMATRIX stands for `[]` (MATLAB writes empty cell contents so).
        return Ok((
            String::new(),
            MatValue::Num {
                dims: vec![0, 0],
                data: vec![],
                imag: None,
            },
        ));
    }
    let mut r = Reader {
        buf: data,
        pos: 0,
        big,
        base: at,
    };
    let flags = r.element()?;
    if flags.ty != MI_UINT32 || flags.data.len() < 4 {
        return Err("array flags missing".into());
    }
    let flag_word = read_u32(&flags.data[..4], big);
    let class = (flag_word & 0xff) as u8;
    let dims_el = r.element()?;
    let dims: Vec<usize> = ints(&dims_el, big)?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    if dims.len() < 2 {
        return Err(format!("{} dimension(s), at least 2 expected", dims.len()));
    }
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("dimensions overflow")?;
    let name_el = r.element()?;
    let name = String::from_utf8_lossy(name_el.data).into_owned();
    let value = match class {
        MX_CELL => {
            if count > data.len() / 8 {
                return Err(format!("cell of {count} elements in {} bytes", data.len()));
            }
            let mut items = Vec::with_capacity(count);
            for i in 0..count {
                let at = r.base + r.pos;
                let el = r
                    .element()
                    .map_err(|e| format!("cell element {}: {e}", i + 1))?;
                if el.ty != MI_MATRIX {
                    return Err(format!("cell element {} is not an array", i + 1));
                }
                let (_, v) = matrix(el.data, big, depth + 1, at + 8)
                    .map_err(|e| format!("cell element {}: {e}", i + 1))?;
                items.push(v);
            }
            MatValue::Cell { dims, items }
        }
        MX_STRUCT | MX_OBJECT => {
            if class == MX_OBJECT {
                r.element()?; // class name
            }
            let len_el = r.element()?;
            let len = *ints(&len_el, big)?
                .first()
                .ok_or("struct field name length missing")?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l > 0)
                .ok_or(format!("bad struct field name length {len}"))?;
            let names_el = r.element()?;
            let fields: Vec<String> = names_el
                .data
                .chunks(len)
                .filter(|c| c.len() == len)
                .map(|c| {
                    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                    String::from_utf8_lossy(&c[..end]).into_owned()
                })
                .collect();
            if count.saturating_mul(fields.len()) > data.len() / 8 {
                return Err(format!(
                    "struct of {count} elements × {} fields in {} bytes",
                    fields.len(),
                    data.len()
                ));
            }
            if fields.is_empty() && count > MAX_FIELDLESS {
                return Err(format!("struct of {count} elements without fields"));
            }
            let mut items = Vec::with_capacity(count);
            for i in 0..count {
                let mut item = BTreeMap::new();
                for f in &fields {
                    let at = r.base + r.pos;
                    let el = r
                        .element()
                        .map_err(|e| format!("struct element {} field `{f}`: {e}", i + 1))?;
                    if el.ty != MI_MATRIX {
                        return Err(format!(
                            "struct element {} field `{f}` is not an array",
                            i + 1
                        ));
                    }
                    let (_, v) = matrix(el.data, big, depth + 1, at + 8)
                        .map_err(|e| format!("struct element {} field `{f}`: {e}", i + 1))?;
                    item.insert(f.clone(), v);
                }
                items.push(item);
            }
            if class == MX_OBJECT {
                MatValue::Other { class }
            } else {
                MatValue::Struct {
                    dims,
                    fields,
                    items,
                }
            }
        }
        MX_CHAR => {
            let el = if r.done() { None } else { Some(r.element()?) };
            let text = match el {
                None => String::new(),
                Some(el) => chars(&el, big)?,
            };
            let n = text.chars().count();
            if n != count {
                return Err(format!(
                    "char array `{name}` of {count} characters holds {n}"
                ));
            }
            MatValue::Char { dims, text }
        }
        // Logical arrays (flag 0x0200) are uint8 0/1 and read as numbers.
        MX_DOUBLE..=MX_UINT64 => {
            let real = if r.done() {
                vec![]
            } else {
                numbers(&r.element()?, big)?
            };
            if real.len() != count {
                return Err(format!(
                    "numeric array `{name}` of {count} elements holds {}",
                    real.len()
                ));
            }
            let imag = if flag_word & FLAG_COMPLEX != 0 && !r.done() {
                let im = numbers(&r.element()?, big)?;
                if im.len() != count {
                    return Err(format!(
                        "imaginary part of `{name}`: {count} elements expected, {} found",
                        im.len()
                    ));
                }
                Some(im)
            } else {
                None
            };
            MatValue::Num {
                dims,
                data: real,
                imag,
            }
        }
        other => MatValue::Other { class: other },
    };
    Ok((name, value))
}

fn ints(el: &Element, big: bool) -> Result<Vec<i64>, String> {
    numbers(el, big)?
        .into_iter()
        .map(|x| {
            if x.fract() == 0.0 && x.abs() < 9.0e15 {
                Ok(x as i64)
            } else {
                Err(format!("{x} is not an integer"))
            }
        })
        .collect()
}

/// The values of a numeric data element, whatever its storage type.
fn numbers(el: &Element, big: bool) -> Result<Vec<f64>, String> {
    let d = el.data;
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            d.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().expect("chunk size");
                    (if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64
                })
                .collect()
        };
    }
    let width = match el.ty {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        ty => return Err(format!("data type {ty} where numbers were expected")),
    };
    if !d.len().is_multiple_of(width) {
        return Err(format!(
            "{} bytes of data is not a whole number of {width}-byte values",
            d.len()
        ));
    }
    Ok(match el.ty {
        MI_INT8 => d.iter().map(|&b| b as i8 as f64).collect(),
        MI_UINT8 => d.iter().map(|&b| b as f64).collect(),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        _ => conv!(u64, 8),
    })
}

/// The characters of a char array's data element.
fn chars(el: &Element, big: bool) -> Result<String, String> {
    let d = el.data;
    let units16 = |d: &[u8]| -> Vec<u16> {
        d.chunks_exact(2)
            .map(|c| read_u16(c, big))
            .collect::<Vec<u16>>()
    };
    Ok(match el.ty {
        MI_UTF8 => String::from_utf8(d.to_vec()).map_err(|_| "char data is not valid UTF-8")?,
        // MATLAB writes chars as miUINT16 code units (UCS-2); a lone surrogate becomes U+FFFD.
        MI_UINT16 | MI_UTF16 => {
            if !d.len().is_multiple_of(2) {
                return Err("odd number of bytes in 16-bit char data".into());
            }
            char::decode_utf16(units16(d))
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        MI_UINT8 | MI_INT8 => d.iter().map(|&b| b as char).collect(),
        MI_UTF32 | MI_UINT32 | MI_INT32 => {
            if !d.len().is_multiple_of(4) {
                return Err("char data is not a whole number of 32-bit values".into());
            }
            d.chunks_exact(4)
                .map(|c| char::from_u32(read_u32(c, big)).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        ty => return Err(format!("data type {ty} in a char array")),
    })
}

// ---------------------------------------------------------------------------------------
// Writer

/// Writes a little-endian Level 5 MAT-file holding `vars` (in order); with `compress`,
/// each variable is an miCOMPRESSED element (as MATLAB's default `-v7`), otherwise plain
/// (`-v6`). Numbers are stored as miDOUBLE with class double, chars as miUINT16. Meant for
/// tests and miniature datasets; [`MatValue::Other`] cannot be written.
pub fn write_mat(path: &Path, vars: &[(&str, &MatValue)], compress: bool) -> Result<(), DataError> {
    let bytes = mat_bytes(vars, compress)?;
    std::fs::write(path, bytes).map_err(DataError::write(format_args!(
        "cannot write {}",
        path.display()
    )))
}

/// [`write_mat`] into memory; a value it cannot write ([`MatValue::Other`]) is refused.
pub fn mat_bytes(vars: &[(&str, &MatValue)], compress: bool) -> Result<Vec<u8>, DataError> {
    encode(vars, compress).map_err(DataError::Invalid)
}

fn encode(vars: &[(&str, &MatValue)], compress: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, Platform: rst, Created by: rst matfile writer".to_vec();
    text.resize(116, b' ');
    out.extend_from_slice(&text);
    out.extend_from_slice(&[0u8; 8]); // subsystem data offset
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for (name, value) in vars {
        let mut el = Vec::new();
        write_matrix(&mut el, name, value)?;
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&el).map_err(|e| e.to_string())?;
            let z = z.finish().map_err(|e| e.to_string())?;
            tag(&mut out, MI_COMPRESSED, z.len())?;
            out.extend_from_slice(&z);
        } else {
            out.extend_from_slice(&el);
        }
    }
    Ok(out)
}

fn tag(out: &mut Vec<u8>, ty: u32, n: usize) -> Result<(), String> {
    let n = u32::try_from(n).map_err(|_| "element larger than 4 GiB")?;
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn element(out: &mut Vec<u8>, ty: u32, data: &[u8]) -> Result<(), String> {
    tag(out, ty, data.len())?;
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
    Ok(())
}

fn write_matrix(out: &mut Vec<u8>, name: &str, value: &MatValue) -> Result<(), String> {
    let mut body = Vec::new();
    let (class, dims) = match value {
        MatValue::Num { dims, imag, .. } => (
            MX_DOUBLE as u32 | if imag.is_some() { FLAG_COMPLEX } else { 0 },
            dims,
        ),
        MatValue::Char { dims, .. } => (MX_CHAR as u32, dims),
        MatValue::Cell { dims, .. } => (MX_CELL as u32, dims),
        MatValue::Struct { dims, .. } => (MX_STRUCT as u32, dims),
        MatValue::Other { class } => return Err(format!("cannot write an array of class {class}")),
    };
    let count: usize = dims.iter().product();
    let mut flags = class.to_le_bytes().to_vec();
    flags.extend_from_slice(&[0; 4]);
    element(&mut body, MI_UINT32, &flags)?;
    let mut dim_bytes = Vec::new();
    for &d in dims {
        let d = i32::try_from(d).map_err(|_| format!("dimension {d} too large"))?;
        dim_bytes.extend_from_slice(&d.to_le_bytes());
    }
    element(&mut body, MI_INT32, &dim_bytes)?;
    element(&mut body, MI_INT8, name.as_bytes())?;
    let check = |n: usize, what: &str| {
        if n == count {
            Ok(())
        } else {
            Err(format!(
                "`{name}`: {n} {what} for dimensions {dims:?} ({count} elements)"
            ))
        }
    };
    match value {
        MatValue::Num { data, imag, .. } => {
            check(data.len(), "values")?;
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            element(&mut body, MI_DOUBLE, &bytes)?;
            if let Some(im) = imag {
                check(im.len(), "imaginary values")?;
                let bytes: Vec<u8> = im.iter().flat_map(|x| x.to_le_bytes()).collect();
                element(&mut body, MI_DOUBLE, &bytes)?;
            }
        }
        MatValue::Char { text, .. } => {
            let units: Vec<u16> = text.encode_utf16().collect();
            check(units.len(), "UTF-16 code units")?;
            let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
            element(&mut body, MI_UINT16, &bytes)?;
        }
        MatValue::Cell { items, .. } => {
            check(items.len(), "cell items")?;
            for item in items {
                write_matrix(&mut body, "", item)?;
            }
        }
        MatValue::Struct { fields, items, .. } => {
            check(items.len(), "struct elements")?;
            let len = fields.iter().map(|f| f.len()).max().unwrap_or(0) + 1;
            element(&mut body, MI_INT32, &(len as i32).to_le_bytes())?;
            let mut names = Vec::new();
            for f in fields {
                let mut b = f.as_bytes().to_vec();
                b.resize(len, 0);
                names.extend_from_slice(&b);
            }
            element(&mut body, MI_INT8, &names)?;
            let empty = MatValue::Num {
                dims: vec![0, 0],
                data: vec![],
                imag: None,
            };
            for item in items {
                for f in fields {
                    write_matrix(&mut body, "", item.get(f).unwrap_or(&empty))?;
                }
            }
        }
        MatValue::Other { .. } => unreachable!("refused above"),
    }
    tag(out, MI_MATRIX, body.len())?;
    out.extend_from_slice(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mat")
            .join(name)
    }

    fn strings(v: &MatValue) -> Vec<String> {
        match v {
            MatValue::Cell { items, .. } => items
                .iter()
                .map(|i| i.as_str().expect("char").to_string())
                .collect(),
            other => panic!("not a cell: {other:?}"),
        }
    }

    /// Files written by `tests/fixtures/mat/make.py` (SciPy `savemat`), plain and compressed.
    #[test]
    fn reads_scipy_files() {
        for suffix in ["plain", "zlib"] {
            let cars = read_mat(&fixture(&format!("cars_annos_{suffix}.mat"))).unwrap();
            let MatValue::Struct {
                dims,
                fields,
                items,
            } = &cars["annotations"]
            else {
                panic!("{:?}", cars["annotations"]);
            };
            assert_eq!(dims, &vec![1, 3]);
            assert_eq!(
                fields,
                &vec!["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
            );
            assert_eq!(items[0]["fname"].as_str(), Some("00001.jpg"));
            assert_eq!(items[2]["fname"].as_str(), Some("00003.jpg"));
            assert_eq!(items[0]["class"].as_scalar(), Some(14.0));
            assert_eq!(items[1]["class"].as_scalar(), Some(3.0));
            assert_eq!(items[2]["class"].as_scalar(), Some(196.0));
            assert_eq!(items[1]["bbox_x2"].as_scalar(), Some(640.0));
            let names = strings(&cars["class_names"]);
            assert_eq!(
                names,
                vec![
                    "AM General Hummer SUV 2000",
                    "Acura RL Sedan 2012",
                    "Ñandú 2001"
                ]
            );
            assert_eq!(cars["class_names"].dims(), &[1, 3]);

            let dogs = read_mat(&fixture(&format!("dogs_list_{suffix}.mat"))).unwrap();
            assert_eq!(dogs["file_list"].dims(), &[2, 1]);
            assert_eq!(
                strings(&dogs["file_list"]),
                vec![
                    "n02085620-Chihuahua/n02085620_5927.jpg",
                    "n02116738-African_hunting_dog/n02116738_10024.jpg"
                ]
            );
            assert_eq!(dogs["labels"].dims(), &[2, 1]);
            assert_eq!(dogs["labels"].as_nums(), Some(&[1.0, 120.0][..]));

            let flowers = read_mat(&fixture(&format!("flowers_labels_{suffix}.mat"))).unwrap();
            assert_eq!(flowers["labels"].dims(), &[1, 5]);
            assert_eq!(
                flowers["labels"].as_nums(),
                Some(&[77.0, 77.0, 1.0, 102.0, 3.0][..])
            );
            // Stored by scipy in its own class (uint8), read as numbers all the same.
            assert_eq!(flowers["small"].as_nums(), Some(&[1.0, 2.0, 255.0][..]));
            assert_eq!(flowers["neg"].as_nums(), Some(&[-3.0, 70000.0][..]));
            assert_eq!(flowers["single"].as_nums(), Some(&[0.5, -2.25][..]));
            let rows = flowers["block"].char_rows().unwrap();
            assert_eq!(rows, vec!["ab", "cd"]);
            assert_eq!(flowers["empty"].dims(), &[0, 0]);
        }
    }

    #[test]
    fn refuses_v73_and_garbage() {
        let e = read_mat(&fixture("v73_header.mat")).unwrap_err().render();
        assert!(e.contains("v7.3"), "{e}");
        let mut fake = vec![0u8; 600];
        fake[..19].copy_from_slice(b"MATLAB 7.3 MAT-file");
        assert!(parse_mat(&fake).unwrap_err().to_string().contains("v7.3"));
        assert!(parse_mat(b"hello")
            .unwrap_err()
            .to_string()
            .contains("not a MATLAB"));
        let mut v4 = vec![0u8; 200];
        v4[0] = 1;
        assert!(parse_mat(&v4).unwrap_err().to_string().contains("Level 4"));
        // Truncation anywhere gives an error, never a panic.
        let good = std::fs::read(fixture("cars_annos_plain.mat")).unwrap();
        for cut in (128..good.len()).step_by(7) {
            let _ = parse_mat(&good[..cut]);
        }
        let zipped = std::fs::read(fixture("cars_annos_zlib.mat")).unwrap();
        for cut in (128..zipped.len()).step_by(5) {
            let _ = parse_mat(&zipped[..cut]);
        }
        // Flipped bytes, too.
        for i in (128..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = parse_mat(&bad);
        }
    }

    #[test]
    fn writer_round_trips() {
        let mut item = BTreeMap::new();
        item.insert("class".to_string(), MatValue::row(vec![7.0]));
        item.insert("fname".to_string(), MatValue::text("00042.jpg"));
        let mut item2 = item.clone();
        item2.insert("fname".to_string(), MatValue::text("ünï.jpg"));
        let st = MatValue::Struct {
            dims: vec![1, 2],
            fields: vec!["fname".into(), "class".into()],
            items: vec![item, item2],
        };
        let cell = MatValue::Cell {
            dims: vec![3, 1],
            items: vec![
                MatValue::text("a/b.jpg"),
                MatValue::text(""),
                MatValue::column(vec![1.5, -2.0]),
            ],
        };
        let complex = MatValue::Num {
            dims: vec![1, 1],
            data: vec![1.0],
            imag: Some(vec![-1.0]),
        };
        let block = MatValue::Char {
            dims: vec![2, 2],
            text: "acbd".into(),
        };
        let vars = [
            ("annotations", &st),
            ("file_list", &cell),
            ("z", &complex),
            ("block", &block),
        ];
        for compress in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.mat");
            write_mat(&path, &vars, compress).unwrap();
            let back = read_mat(&path).unwrap();
            assert_eq!(back.len(), 4);
            for (name, v) in vars {
                // The empty string is written as 1×0 char; everything else is exact.
                if name == "file_list" {
                    let MatValue::Cell { items, .. } = &back[name] else {
                        panic!()
                    };
                    assert_eq!(items[0], MatValue::text("a/b.jpg"));
                    assert_eq!(items[1].as_str(), Some(""));
                    assert_eq!(items[2], MatValue::column(vec![1.5, -2.0]));
                } else {
                    assert_eq!(&back[name], v, "{name}");
                }
            }
            assert_eq!(back["block"].char_rows().unwrap(), vec!["ab", "cd"]);
        }
        let bad = MatValue::Num {
            dims: vec![2, 2],
            data: vec![1.0],
            imag: None,
        };
        assert!(mat_bytes(&[("bad", &bad)], false).is_err());
    }
}
