//! A tiny little-endian binary codec for kluis's on-disk structures (see `docs/format.md`).
//!
//! Written by hand rather than with a serde format so that (a) every byte is documented and stable,
//! and (b) secrets decode straight into zeroizing buffers with no hidden intermediate copies.
//! Every read is bounds-checked and returns [`DecodeError`]; decoding never panics.

pub use crate::error::DecodeError;

/// Appends little-endian fields to a byte vector.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// A short string or byte run: u8 length, then the bytes. Callers guarantee `v.len() <= 255`
    /// (names are validated to at most 64 bytes); longer input is truncated to keep the stream valid.
    pub(crate) fn str8(&mut self, v: &str) -> &mut Self {
        let b = &v.as_bytes()[..v.len().min(255)];
        self.u8(b.len() as u8).raw(b)
    }
    /// LEB128 unsigned varint: 7 bits per byte, low group first, high bit set on every byte but
    /// the last (1 byte below 128, at most 10 for a `u64`).
    pub(crate) fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.u8(v as u8)
    }
    /// A signed value as a varint after zigzag mapping (0, -1, 1, -2, … → 0, 1, 2, 3, …), so
    /// small magnitudes of either sign stay short.
    pub(crate) fn zigzag(&mut self, v: i64) -> &mut Self {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    /// u32 length, then the bytes.
    pub(crate) fn bytes32(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32).raw(v)
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from a byte slice, never past its end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    fn err(&self) -> DecodeError {
        DecodeError { what: self.what }
    }
    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub(crate) fn str8(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u8()? as usize;
        let b = self.raw(n)?;
        std::str::from_utf8(b).map_err(|_| self.err())
    }
    /// A [`Writer::varint`]. Refuses more than 10 bytes, bits beyond 64 and non-minimal
    /// encodings (a trailing zero group), so every value has exactly one encoding.
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let group = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(self.err()); // the tenth byte holds bit 63 only
            }
            v |= group << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(self.err()); // overlong
                }
                return Ok(v);
            }
        }
        Err(self.err())
    }
    /// A varint that must not exceed `max` (counts, lengths, ids).
    pub(crate) fn varint_max(&mut self, max: u64) -> Result<u64, DecodeError> {
        let v = self.varint()?;
        if v > max {
            return Err(self.err());
        }
        Ok(v)
    }
    /// A count of items of at least one byte each: at most `max` and at most the bytes left, so
    /// a hostile count cannot make a decoder reserve more than the input could hold.
    pub(crate) fn count_varint(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.varint_max(max as u64)? as usize;
        if n > self.buf.len() {
            return Err(self.err());
        }
        Ok(n)
    }
    /// A [`Writer::zigzag`].
    pub(crate) fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    pub(crate) fn bytes32(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.err());
        }
        self.raw(n)
    }
    /// A count that must not exceed `max` (guards allocations against hostile input).
    pub(crate) fn count16(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(self.err());
        }
        Ok(n)
    }
    pub(crate) fn count32(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.err());
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed (trailing garbage is corruption too).
    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation_is_an_error() {
        let mut w = Writer::default();
        w.u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .i64(-5)
            .str8("naam")
            .bytes32(b"xyz");
        let buf = w.finish();
        let mut r = Reader::new(&buf, "test");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(r.u64().unwrap(), 4);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.str8().unwrap(), "naam");
        assert_eq!(r.bytes32(10).unwrap(), b"xyz");
        r.end().unwrap();
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut], "test");
            let res = (|| {
                r.u8()?;
                r.u16()?;
                r.u32()?;
                r.u64()?;
                r.i64()?;
                r.str8()?;
                r.bytes32(10)?;
                Ok::<_, DecodeError>(())
            })();
            assert!(res.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn varints_round_trip_and_refuse_overlong_or_overflowing_input() {
        let values = [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ];
        for v in values {
            let mut w = Writer::default();
            w.varint(v);
            let b = w.finish();
            let mut r = Reader::new(&b, "t");
            assert_eq!(r.varint().unwrap(), v);
            r.end().unwrap();
            for cut in 0..b.len() {
                assert!(Reader::new(&b[..cut], "t").varint().is_err());
            }
        }
        for v in [0i64, -1, 1, -64, 64, 1_800_000_000, i64::MIN, i64::MAX] {
            let mut w = Writer::default();
            w.zigzag(v);
            let b = w.finish();
            assert_eq!(Reader::new(&b, "t").zigzag().unwrap(), v);
        }
        assert!(
            Reader::new(&[0x80, 0x00], "t").varint().is_err(),
            "overlong"
        );
        let eleven = [0xffu8; 9]
            .iter()
            .chain(&[0x02])
            .copied()
            .collect::<Vec<_>>();
        assert!(
            Reader::new(&eleven, "t").varint().is_err(),
            "beyond 64 bits"
        );
        assert!(Reader::new(&[0xff; 11], "t").varint().is_err());
        assert!(
            Reader::new(&[5], "t").count_varint(10).is_err(),
            "count above bytes left"
        );
    }
}
