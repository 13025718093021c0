//! The IDX format (MNIST, Fashion-MNIST): a 4-byte magic `0x0000TTNN` (TT the element type,
//! 0x08 = unsigned byte; NN the number of dimensions), NN big-endian u32 dimensions, then
//! the elements in row-major order. Files may be gzip-compressed (detected by content).
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::data::error::DataError;
use flate2::bufread::MultiGzDecoder;

/// Element type byte of unsigned-byte IDX files, the only one read here.
pub const TYPE_U8: u8 = 0x08;

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn type_name(t: u8) -> &'static str {
    match t {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "short",
        0x0C => "int",
        0x0D => "float",
        0x0E => "double",
        _ => "unknown",
    }
}

/// Reads an IDX file (plain or gzip) of unsigned bytes.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let file = File::open(path).map_err(DataError::read("cannot open"))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader.fill_buf().map_err(DataError::read("cannot read"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        parse(MultiGzDecoder::new(reader))
            .map_err(|e| DataError::Invalid(format!("{e} (gzip-compressed file)")))
    } else {
        parse_idx(reader)
    }
}

fn read_exact_or(reader: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), String> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => format!("file ends inside the {what}"),
        _ => format!("cannot read the {what}: {e}"),
    })
}

/// Parses an IDX stream of unsigned bytes.
pub fn parse_idx(reader: impl Read) -> Result<IdxArray, DataError> {
    parse(reader).map_err(DataError::Invalid)
}

/// The parser: its messages say what in the stream is wrong.
fn parse(mut reader: impl Read) -> Result<IdxArray, String> {
    let mut magic = [0u8; 4];
    read_exact_or(&mut reader, &mut magic, "header")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format!(
            "not an IDX file (magic 0x{:08x})",
            u32::from_be_bytes(magic)
        ));
    }
    if magic[2] != TYPE_U8 {
        return Err(format!(
            "IDX element type 0x{:02x} ({}) is not supported; only unsigned bytes (0x08)",
            magic[2],
            type_name(magic[2])
        ));
    }
    let ndim = magic[3] as usize;
    if ndim == 0 {
        return Err("IDX file declares zero dimensions".into());
    }
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let mut d = [0u8; 4];
        read_exact_or(&mut reader, &mut d, "dimensions")?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&c| c <= (1usize << 40))
        .ok_or_else(|| format!("IDX dimensions {dims:?} are too large"))?;
    let mut data = Vec::with_capacity(count.min(1 << 28));
    reader
        .by_ref()
        .take(count as u64)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read the data: {e}"))?;
    if data.len() != count {
        return Err(format!(
            "truncated: dimensions {dims:?} need {count} bytes of data, the file has {}",
            data.len()
        ));
    }
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => {
            return Err(format!(
                "trailing data after the {count} bytes that dimensions {dims:?} declare"
            ))
        }
        Err(e) => return Err(format!("cannot read the data: {e}")),
    }
    Ok(IdxArray { dims, data })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// An IDX file of unsigned bytes.
    pub(crate) fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        std::fs::write(dir.path().join("a"), &bytes).unwrap();
        std::fs::write(dir.path().join("a.gz"), gzip(&bytes)).unwrap();
        for name in ["a", "a.gz"] {
            let arr = read_idx(&dir.path().join(name)).unwrap();
            assert_eq!(arr.dims, vec![2, 2, 3]);
            assert_eq!(arr.data[11], 12);
        }
    }

    #[test]
    fn rejects_bad_files() {
        let e = parse_idx(&idx_bytes(&[3], &[1, 2])[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = parse_idx(&idx_bytes(&[1], &[1, 2])[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("trailing"), "{e}");
        let e = parse_idx(&b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd"[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("float"), "{e}");
        let e = parse_idx(&b"PK\x03\x04"[..]).unwrap_err().to_string();
        assert!(e.contains("not an IDX file"), "{e}");
        let e = parse_idx(&b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("too large"), "{e}");
        let e = parse_idx(&b"\x00\x00"[..]).unwrap_err().to_string();
        assert!(e.contains("header"), "{e}");
    }
}
