//! meshd's IPv4 fragment joiner (`reassembly::join_fragments`) over a batch of packets
//! (records: `sixpn_fuzz::records`, the first byte choosing the headroom offset). What comes
//! out is the input in order, with some runs of consecutive fragments each replaced by one
//! whole datagram: its header the first fragment's (length, flags, offset and checksum made
//! whole), its data every fragment's data in order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn checksum_ok(header: &[u8]) -> bool {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// Whether `out` is `run` (two or more packets from `offset` on) joined.
fn is_join(out: &[u8], run: &[Vec<u8>], offset: usize) -> bool {
    let first = &run[0];
    if out.len() < offset + 20 || out[..offset] != first[..offset] {
        return false;
    }
    let header_len = usize::from(first[offset] & 0x0f) * 4;
    let mut data = first[offset + header_len..].to_vec();
    for f in &run[1..] {
        let h = usize::from(f[offset] & 0x0f) * 4;
        data.extend_from_slice(&f[offset + h..]);
    }
    let p = &out[offset..];
    p.len() == header_len + data.len()
        && usize::from(u16::from_be_bytes([p[2], p[3]])) == p.len()
        && p[6] & 0x3f == 0
        && p[7] == 0
        && p[6] & 0xc0 == first[offset + 6] & 0xc0
        && p[..2] == first[offset..offset + 2]
        && p[4..6] == first[offset + 4..offset + 6]
        && p[8..10] == first[offset + 8..offset + 10]
        && p[12..header_len] == first[offset + 12..offset + header_len]
        && checksum_ok(&p[..header_len])
        && p[header_len..] == data[..]
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let offset = usize::from(how % 16);
    let input: Vec<Vec<u8>> = sixpn_fuzz::records(rest)
        .take(64)
        .map(|(prefix, p)| {
            let mut b = vec![prefix; offset];
            b.extend_from_slice(p);
            b
        })
        .collect();
    let mut bufs = input.clone();
    // Spare buffers past `n`, as the batch has: they must be left alone.
    bufs.push(vec![0xaa; 3]);
    let n = input.len();
    let kept = meshd::reassembly::join_fragments(&mut bufs, n, offset);
    assert!(kept <= n);
    let mut i = 0;
    for (j, out) in bufs[..kept].iter().enumerate() {
        if i < n && *out == input[i] {
            i += 1;
            continue;
        }
        let run = (i + 2..=n).find(|&end| is_join(out, &input[i..end], offset));
        let Some(end) = run else {
            panic!("output {j} is neither input {i} nor a join of the run from it");
        };
        i = end;
    }
    assert_eq!(i, n, "every input packet is in the output");
    assert_eq!(bufs.len(), n + 1);
});
