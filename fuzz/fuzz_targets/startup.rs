//! The untagged packets a client opens with (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest):
//! `StartupPacket::parse` on arbitrary bytes, read as `read_opening` reads them (one packet after another).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsluice::protocol::startup::{MAX_STARTUP_LEN, StartupPacket};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((packet, n))) = StartupPacket::parse(rest) {
        assert!((8..=MAX_STARTUP_LEN).contains(&n) && n <= rest.len(), "took {n} of {}", rest.len());
        // Every shorter prefix of a whole packet asks for more bytes rather than parsing differently.
        for cut in [0, 4, n - 1] {
            assert_eq!(StartupPacket::parse(&rest[..cut]), Ok(None), "cut {cut} of {n}");
        }
        if let StartupPacket::Startup { params, .. } = &packet {
            let text: usize = params.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            assert!(text < n, "params bigger than their packet");
            assert!(params.iter().all(|(k, _)| !k.is_empty()), "empty parameter name");
        }
        rest = &rest[n..];
    }
});
