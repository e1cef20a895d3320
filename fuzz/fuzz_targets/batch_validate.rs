//! Record batch validation on arbitrary bytes: `validate_records` never panics, and whatever it
//! accepts agrees with the header view, the CRC and `BatchIter` (the paired check TigerStyle
//! asks for: the validator and the reader must see the same batches).
//!
//! Input: one mode byte, then the records buffer. With mode bit 0 set, every batch-shaped
//! chunk gets a correct CRC first, so the fuzzer explores the checks behind the CRC.
#![no_main]

use gregor_engine::batch::{self, BatchHeader, BatchIter};
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE_BYTES: usize = 1 << 20;

fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(total) = BatchHeader::view(&buf[pos..]).and_then(|h| h.total_bytes()) {
        if total < 21 || pos + total > buf.len() {
            break;
        }
        let crc = batch::compute_crc(&buf[pos..pos + total]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos += total;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut data);
    }
    if let Ok(infos) = batch::validate_records(&data, MAX_MESSAGE_BYTES) {
        let mut pos = 0usize;
        for info in &infos {
            assert_eq!(info.position, pos);
            let b = &data[pos..pos + info.total_bytes];
            let header = BatchHeader::view(b).expect("an accepted batch has a header");
            assert_eq!(header.total_bytes(), Some(info.total_bytes));
            assert!(batch::crc_ok(b), "accepted a batch with a bad CRC");
            assert!(info.total_bytes <= MAX_MESSAGE_BYTES + 12);
            pos += info.total_bytes;
        }
        assert_eq!(pos, data.len(), "accepted batches must tile the buffer");
        assert_eq!(BatchIter::new(&data).count(), infos.len());
    }
    for (_header, b) in BatchIter::new(&data) {
        let _ = batch::crc_ok(b);
        let _ = batch::find_record_by_timestamp(b, i64::MIN);
        let _ = batch::find_record_by_timestamp(b, 0);
    }
});
