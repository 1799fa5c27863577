//! Read buffers: room for a full-sized read without allocating in steady state, and giving back what
//! grew for one large message.

use bytes::BytesMut;

/// Size of one socket read.
pub const READ_CHUNK: usize = 16 * 1024;

/// Buffers above this capacity are reallocated small once what they hold fits in a read chunk.
const SHRINK_ABOVE: usize = 256 * 1024;

/// Makes room for a full-sized read. `reserve` reuses the buffer's own storage once what was read
/// has been forwarded, so this does not allocate in steady state. A buffer that grew for one large
/// message is given back once it is mostly empty.
pub fn ensure_room(buf: &mut BytesMut) {
    shrink(buf);
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Gives back the storage of a buffer that grew for one large message once it holds little.
pub fn shrink(buf: &mut BytesMut) {
    if buf.capacity() > SHRINK_ABOVE && buf.len() <= READ_CHUNK {
        let mut small = BytesMut::with_capacity(READ_CHUNK.max(buf.len()));
        small.extend_from_slice(buf);
        *buf = small;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_made_and_big_buffers_shrink() {
        let mut b = BytesMut::new();
        ensure_room(&mut b);
        assert!(b.capacity() >= READ_CHUNK);
        let mut big = BytesMut::with_capacity(4 * SHRINK_ABOVE);
        big.extend_from_slice(&[1; 100]);
        shrink(&mut big);
        assert!(big.capacity() < SHRINK_ABOVE);
        assert_eq!(&big[..], &[1; 100][..]);
    }
}
