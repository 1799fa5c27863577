//! The layout of the BackendKeyData pgsluice hands its clients: the same as PgBouncer's since 1.21, so
//! that pgsluice and PgBouncer processes can be peered with each other. In the 8 bytes as sent (the
//! 4-byte "process id", then the 4-byte secret):
//!
//! ```text
//! byte 0      random, top bit clear (the process id stays positive: some clients insist on it)
//! byte 1      peer_id, low 8 bits      } only with peering on (peer_id > 0); random otherwise
//! byte 2      peer_id, high 6 bits     }
//! byte 3..6   random
//! byte 7      random, but its low 2 bits are the TTL: 3 when handed out, one less per forward
//! ```
//!
//! With peering on that leaves 45 random bits (7 + 8 + 30), PgBouncer's figure; without it, 63. A
//! forged key must guess all of them: the registry matches whole keys only.

/// The TTL bits (low 2 of the secret's last byte).
pub const TTL_MASK: u32 = 0b11;

/// A (process id, secret) pair as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: u32,
}

impl CancelKey {
    /// A fresh random key naming `peer_id` (0 = no peering: all but the sign bit random).
    pub fn issue(peer_id: u16) -> CancelKey {
        let mut pid = rand::random::<u32>() & 0x7fff_ffff;
        let mut secret = rand::random::<u32>();
        if peer_id > 0 {
            let [low, high] = peer_id.to_le_bytes();
            pid = (pid & 0xff00_00ff) | (u32::from(low) << 16) | (u32::from(high) << 8);
            secret |= TTL_MASK;
        }
        CancelKey { pid, secret }
    }

    /// The peer_id the key names (meaningful only where peering is on).
    pub fn peer_id(self) -> u16 {
        let [_, low, high, _] = self.pid.to_be_bytes();
        u16::from_le_bytes([low, high])
    }

    /// How many more times the request may be forwarded.
    pub fn ttl(self) -> u32 {
        self.secret & TTL_MASK
    }

    /// The key with one forward used up (`None` when none is left).
    pub fn forwarded(self) -> Option<CancelKey> {
        (self.ttl() > 0).then(|| CancelKey { secret: self.secret - 1, ..self })
    }

    /// The key as it was handed out (TTL full), whatever forwards it went through.
    pub fn as_issued(self) -> CancelKey {
        CancelKey { secret: self.secret | TTL_MASK, ..self }
    }

    /// The 16-byte CancelRequest carrying this key.
    pub fn request(self) -> [u8; 16] {
        let mut pkt = [0u8; 16];
        pkt[0..4].copy_from_slice(&16u32.to_be_bytes());
        pkt[4..8].copy_from_slice(&80_877_102u32.to_be_bytes());
        pkt[8..12].copy_from_slice(&self.pid.to_be_bytes());
        pkt[12..16].copy_from_slice(&self.secret.to_be_bytes());
        pkt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_peer_in_pgbouncers_bytes_and_keeps_its_pid_positive() {
        for id in [1u16, 2, 255, 256, 0x1234, crate::config::MAX_PEER_ID] {
            for _ in 0..200 {
                let k = CancelKey::issue(id);
                assert_eq!(k.peer_id(), id);
                let bytes = k.request();
                // PgBouncer reads the id as key[1] + (key[2] << 8) of the 8 bytes after the code.
                assert_eq!(u16::from(bytes[9]) + (u16::from(bytes[10]) << 8), id);
                assert_eq!(bytes[15] & 0b11, 0b11, "TTL 3 when handed out");
                assert!(k.pid < 0x8000_0000);
            }
        }
    }

    #[test]
    fn the_ttl_runs_out_after_three_forwards_and_the_key_still_matches() {
        let k = CancelKey::issue(7);
        let once = k.forwarded().unwrap();
        let thrice = once.forwarded().and_then(|k| k.forwarded()).unwrap();
        assert_eq!((once.ttl(), thrice.ttl()), (2, 0));
        assert_eq!(thrice.forwarded(), None);
        assert_eq!(thrice.as_issued(), k);
        assert_eq!(thrice.peer_id(), 7);
    }

    #[test]
    fn the_random_part_varies_in_every_bit_it_owns() {
        // Bits that ever differ across many keys: 45 with peering, 63 without.
        let varied = |id: u16| {
            let first = CancelKey::issue(id);
            let (mut p, mut s) = (0u32, 0u32);
            for _ in 0..2000 {
                let k = CancelKey::issue(id);
                p |= k.pid ^ first.pid;
                s |= k.secret ^ first.secret;
            }
            p.count_ones() + s.count_ones()
        };
        assert_eq!(varied(5), 45);
        assert_eq!(varied(0), 63);
    }
}
