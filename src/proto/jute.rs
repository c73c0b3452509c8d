//! Jute binary encoding (big-endian), bounded and zero-copy.
//!
//! `Reader` borrows the connection's buffer: strings and buffers come back as slices of it, so a
//! request is decoded without copying its path or data. Every length read from the wire is
//! checked against the bytes that remain before it is used; running short is `ProtoError::Short`,
//! never a panic. `Writer` appends to a `Vec<u8>` that is usually the connection's write buffer.

use super::ProtoError;

/// A cursor over one frame's payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, offset: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Takes `count` bytes or fails without moving.
    pub fn take(&mut self, count: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.offset.checked_add(count).ok_or(ProtoError::Short)?;
        let slice = self.bytes.get(self.offset..end).ok_or(ProtoError::Short)?;
        self.offset = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let slice = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    pub fn read_bool(&mut self) -> Result<bool, ProtoError> {
        Ok(self.take_array::<1>()?[0] != 0)
    }

    pub fn read_i32(&mut self) -> Result<i32, ProtoError> {
        Ok(i32::from_be_bytes(self.take_array::<4>()?))
    }

    pub fn read_i64(&mut self) -> Result<i64, ProtoError> {
        Ok(i64::from_be_bytes(self.take_array::<8>()?))
    }

    /// Reads a length prefix: -1 is null (None); any other negative value, or one larger than
    /// what remains, is an error.
    fn read_len(&mut self) -> Result<Option<usize>, ProtoError> {
        let len = self.read_i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| ProtoError::BadLength(len))?;
        if len > self.remaining() {
            return Err(ProtoError::BadLength(len as i32));
        }
        Ok(Some(len))
    }

    /// A jute `buffer`; None is the null buffer (len -1), distinct from an empty one.
    pub fn read_buffer(&mut self) -> Result<Option<&'a [u8]>, ProtoError> {
        match self.read_len()? {
            None => Ok(None),
            Some(len) => Ok(Some(self.take(len)?)),
        }
    }

    /// A jute `ustring`; None is the null string.
    pub fn read_ustring(&mut self) -> Result<Option<&'a str>, ProtoError> {
        match self.read_buffer()? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| ProtoError::BadUtf8),
        }
    }

    /// A `ustring` where null is read as the empty string, as the Java server does for paths.
    pub fn read_string(&mut self) -> Result<&'a str, ProtoError> {
        Ok(self.read_ustring()?.unwrap_or(""))
    }

    /// A vector's element count; None is the null vector. The count is bounded by the bytes
    /// left (every element takes at least one byte), so a forged count cannot make us allocate.
    pub fn read_vec_len(&mut self) -> Result<Option<usize>, ProtoError> {
        let len = self.read_i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| ProtoError::BadLength(len))?;
        if len > self.remaining() {
            return Err(ProtoError::BadLength(len as i32));
        }
        Ok(Some(len))
    }

    /// A `vector<ustring>`; null reads as empty.
    pub fn read_string_vec(&mut self) -> Result<Vec<&'a str>, ProtoError> {
        let count = self.read_vec_len()?.unwrap_or(0);
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.read_string()?);
        }
        Ok(out)
    }
}

/// Appends jute values to a byte vector.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn write_bool(&mut self, value: bool) {
        self.out.push(u8::from(value));
    }

    pub fn write_i32(&mut self, value: i32) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    pub fn write_i64(&mut self, value: i64) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// Writes a length as a jute int. Lengths beyond i32 cannot be framed; callers bound
    /// every value by jute.maxbuffer long before that, so this saturates instead of wrapping.
    fn write_len(&mut self, len: usize) {
        self.write_i32(i32::try_from(len).unwrap_or(i32::MAX));
    }

    pub fn write_buffer(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.write_i32(-1),
            Some(bytes) => {
                self.write_len(bytes.len());
                self.out.extend_from_slice(bytes);
            }
        }
    }

    pub fn write_ustring(&mut self, value: Option<&str>) {
        self.write_buffer(value.map(str::as_bytes));
    }

    pub fn write_string(&mut self, value: &str) {
        self.write_buffer(Some(value.as_bytes()));
    }

    pub fn write_vec_len(&mut self, count: usize) {
        self.write_len(count);
    }

    pub fn write_string_vec<S: AsRef<str>>(&mut self, values: &[S]) {
        self.write_vec_len(values.len());
        for value in values {
            self.write_string(value.as_ref());
        }
    }

    /// Reserves a 4-byte length prefix and returns its offset, for `end_frame`.
    pub fn begin_frame(&mut self) -> usize {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        at
    }

    /// Fills in the length prefix reserved by `begin_frame` with the bytes written since.
    pub fn end_frame(&mut self, at: usize) {
        let len = self.out.len() - at - 4;
        let len = i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes();
        if let Some(slot) = self.out.get_mut(at..at + 4) {
            slot.copy_from_slice(&len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        // Every primitive written by Writer reads back equal, big-endian on the wire.
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.write_bool(true);
        w.write_i32(-7);
        w.write_i64(0x0102_0304_0506_0708);
        w.write_buffer(None);
        w.write_buffer(Some(b""));
        w.write_string("/a/b");
        assert_eq!(&out[1..5], &(-7i32).to_be_bytes());
        let mut r = Reader::new(&out);
        assert!(r.read_bool().unwrap());
        assert_eq!(r.read_i32().unwrap(), -7);
        assert_eq!(r.read_i64().unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(r.read_buffer().unwrap(), None);
        assert_eq!(r.read_buffer().unwrap(), Some(&b""[..]));
        assert_eq!(r.read_ustring().unwrap(), Some("/a/b"));
        assert!(r.is_empty());
    }

    #[test]
    fn forged_lengths_are_errors() {
        // A length larger than the frame, or negative other than -1, is rejected.
        let mut bytes = 1000i32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        assert!(Reader::new(&bytes).read_buffer().is_err());
        let bytes = (-2i32).to_be_bytes();
        assert!(Reader::new(&bytes).read_buffer().is_err());
        let bytes = i32::MAX.to_be_bytes();
        assert!(Reader::new(&bytes).read_vec_len().is_err());
        assert!(Reader::new(&[0, 0]).read_i32().is_err());
    }
}
