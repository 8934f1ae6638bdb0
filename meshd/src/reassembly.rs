//! Joining the fragments of an IPv4 datagram that arrive together, before they go to the TUN.
//!
//! A 1,400-byte UDP payload does not fit a 1,420-byte tunnel, so the sending kernel splits
//! each such datagram into two fragments and the tunnel carries both. Written to the TUN as
//! they came, each fragment costs the receiving kernel a write, a buffer, a reassembly-queue
//! lookup and a timer; the second one completes the datagram. When every fragment of a
//! datagram sits next to the others in one batch (as they do: the sender reads them from its
//! TUN one after the other, and WireGuard keeps their order), joining them here costs a copy
//! of the later fragments and saves all of that. The whole datagram can then also be
//! coalesced with its neighbours of the same flow into one UDP GSO write.
//!
//! Only IPv4, because an IPv4 router splits a datagram again when it is forwarded to a
//! smaller link (fragments never carry Don't Fragment), while an IPv6 router would drop a
//! joined datagram larger than the next link and answer Packet Too Big, which the sender
//! cannot act on. Only complete runs, in order, with nothing in between, are joined; anything
//! else (a lost, reordered, overlapping or malformed fragment) goes through as it came, for
//! the kernel to reassemble or refuse. No state is kept from one batch to the next.

/// Joins, in `bufs[..n]`, each complete run of consecutive IPv4 fragments into the first of
/// them. Each buffer holds a packet from byte `offset` on. The buffers are reordered so that
/// the packets to write come first, in their order; returns how many there are. The buffers
/// after them keep their allocations for reuse.
pub fn join_fragments(bufs: &mut [Vec<u8>], n: usize, offset: usize) -> usize {
    let n = n.min(bufs.len());
    let mut kept = 0;
    let mut i = 0;
    while i < n {
        let run = complete_run(&bufs[i..n], offset);
        if run > 1 {
            join(&mut bufs[i..i + run], offset);
        }
        bufs.swap(kept, i);
        kept += 1;
        i += run;
    }
    kept
}

/// The fields of an IPv4 fragment that joining needs, from a checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fragment {
    /// Source, destination, identification and protocol: which datagram it belongs to.
    key: [u8; 11],
    header_len: usize,
    /// Where its data goes in the datagram, in bytes.
    start: usize,
    data_len: usize,
    more: bool,
}

const MORE_FRAGMENTS: u8 = 0x20;
/// The largest an IPv4 datagram can be (its total length is 16 bits).
const MAX_DATAGRAM: usize = 65_535;

impl Fragment {
    /// The packet's fragment fields, or `None` if it is not a well-formed IPv4 fragment.
    fn parse(packet: &[u8]) -> Option<Fragment> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return None;
        }
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if header_len < 20 || total_len != packet.len() || header_len > total_len {
            return None;
        }
        let more = packet[6] & MORE_FRAGMENTS != 0;
        let start = usize::from(u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff) * 8;
        if !more && start == 0 {
            return None; // a whole datagram
        }
        // The kernel drops a header with a bad checksum; a joined one must not launder it.
        if header_checksum(&packet[..header_len]) != 0 {
            return None;
        }
        let mut key = [0u8; 11];
        key[..8].copy_from_slice(&packet[12..20]);
        key[8..10].copy_from_slice(&packet[4..6]);
        key[10] = packet[9];
        Some(Fragment {
            key,
            header_len,
            start,
            data_len: total_len - header_len,
            more,
        })
    }
}

/// How many packets from the first on make one whole datagram: a first fragment followed
/// directly by the rest, each starting where the one before ended, the last without "more
/// fragments". 1 when the first packet does not start such a run.
fn complete_run(bufs: &[Vec<u8>], offset: usize) -> usize {
    let Some(first) = bufs[0].get(offset..).and_then(Fragment::parse) else {
        return 1;
    };
    if first.start != 0 || !first.more || first.data_len % 8 != 0 {
        return 1;
    }
    let mut end = first.data_len;
    for (k, buf) in bufs.iter().enumerate().skip(1) {
        let Some(next) = buf.get(offset..).and_then(Fragment::parse) else {
            return 1;
        };
        if next.key != first.key || next.start != end {
            return 1;
        }
        end += next.data_len;
        if first.header_len + end > MAX_DATAGRAM {
            return 1;
        }
        if !next.more {
            return k + 1;
        }
        if next.data_len % 8 != 0 {
            return 1;
        }
    }
    1
}

/// Appends the data of `run[1..]` to the packet in `run[0]` and makes its header that of the
/// whole datagram. The run has been checked by [`complete_run`].
fn join(run: &mut [Vec<u8>], offset: usize) {
    let (first, rest) = run.split_first_mut().expect("a run has a first fragment");
    for buf in rest.iter() {
        let header_len = usize::from(buf[offset] & 0x0f) * 4;
        first.extend_from_slice(&buf[offset + header_len..]);
    }
    let packet = &mut first[offset..];
    let total = packet.len() as u16;
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    // Not a fragment any more: no "more fragments", offset 0; the other flag bits stay.
    packet[6] &= !(MORE_FRAGMENTS | 0x1f);
    packet[7] = 0;
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    packet[10..12].copy_from_slice(&[0, 0]);
    let checksum = header_checksum(&packet[..header_len]);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
}

/// The IPv4 header checksum of `header` if its checksum field is zero; 0 if the field holds
/// the right checksum.
fn header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: usize = 10;

    /// A UDP datagram of `payload` bytes from 10.0.0.1 to 10.0.0.2, as a sender's IP
    /// layer would build it (UDP checksum left zero: not checked here).
    fn datagram(id: u16, payload: usize) -> Vec<u8> {
        let total = 20 + 8 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&5000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5001u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = (i % 251) as u8 ^ id as u8;
        }
        reseal(&mut p);
        p
    }

    /// Recomputes the header checksum after a test changed the header.
    fn reseal(p: &mut [u8]) {
        p[10..12].copy_from_slice(&[0, 0]);
        let c = header_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// Splits `whole` as Linux's ip_fragment does for `mtu`: data in multiples of 8, the
    /// header copied, offsets and "more fragments" set, checksums recomputed.
    fn fragment(whole: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let data = &whole[20..];
        let step = (mtu - 20) / 8 * 8;
        let mut out = Vec::new();
        for (k, chunk) in data.chunks(step).enumerate() {
            let mut f = whole[..20].to_vec();
            f.extend_from_slice(chunk);
            let total = f.len() as u16;
            f[2..4].copy_from_slice(&total.to_be_bytes());
            let more = (k + 1) * step < data.len();
            let field = ((k * step / 8) as u16) | if more { 0x2000 } else { 0 };
            f[6..8].copy_from_slice(&field.to_be_bytes());
            reseal(&mut f);
            out.push(f);
        }
        out
    }

    fn batch(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        packets
            .iter()
            .map(|p| {
                let mut b = vec![0xee; OFF];
                b.extend_from_slice(p);
                b
            })
            .collect()
    }

    fn joined(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut bufs = batch(packets);
        let n = join_fragments(&mut bufs, packets.len(), OFF);
        assert_eq!(bufs.len(), packets.len(), "no buffer is lost or added");
        bufs[..n]
            .iter()
            .map(|b| {
                assert_eq!(&b[..OFF], &[0xee; OFF], "the room in front is untouched");
                b[OFF..].to_vec()
            })
            .collect()
    }

    #[test]
    fn two_fragments_in_a_row_become_the_datagram_they_were_cut_from() {
        let whole = datagram(7, 1400);
        let parts = fragment(&whole, 1420);
        assert_eq!(parts.len(), 2);
        assert_eq!(joined(&parts), vec![whole]);
    }

    #[test]
    fn many_fragments_and_whole_packets_keep_their_order() {
        let a = datagram(1, 4000); // three fragments at 1420
        let b = datagram(2, 100); // whole
        let c = datagram(3, 1400);
        let mut packets = fragment(&a, 1420);
        assert_eq!(packets.len(), 3);
        packets.push(b.clone());
        packets.extend(fragment(&c, 1420));
        assert_eq!(joined(&packets), vec![a, b, c]);
    }

    #[test]
    fn the_largest_datagram_is_joined_and_the_header_checksum_is_valid() {
        let whole = datagram(9, 65_535 - 28);
        let out = joined(&fragment(&whole, 1420));
        assert_eq!(out, vec![whole]);
        assert_eq!(
            header_checksum(&out[0][..20]),
            0,
            "checksum over a valid header"
        );
    }

    #[test]
    fn incomplete_reordered_or_interleaved_runs_go_through_as_they_came() {
        let a = fragment(&datagram(1, 1400), 1420);
        let b = fragment(&datagram(2, 1400), 1420);
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![a[0].clone()],                             // the rest is lost
            vec![a[1].clone()],                             // the first is lost
            vec![a[1].clone(), a[0].clone()],               // reordered
            vec![a[0].clone(), b[0].clone(), a[1].clone()], // interleaved
            vec![a[0].clone(), a[0].clone(), a[1].clone()], // duplicated first
            vec![a[0].clone(), b[1].clone()],               // another datagram's end
        ];
        for (k, packets) in cases.iter().enumerate() {
            let out = joined(packets);
            // Interleaved and duplicated: the complete pair at the end is still joined.
            let expected = match k {
                4 => vec![a[0].clone(), datagram(1, 1400)],
                _ => packets.clone(),
            };
            assert_eq!(out, expected, "case {k}");
        }
    }

    #[test]
    fn malformed_fragments_are_left_for_the_kernel() {
        let whole = datagram(4, 1400);
        let parts = fragment(&whole, 1420);
        let mut wrong_length = parts.clone();
        wrong_length[1][3] ^= 1; // total length disagrees with the packet's
        reseal(&mut wrong_length[1]);
        let mut bad_checksum = parts.clone();
        bad_checksum[1][10] ^= 1;
        let mut gap = parts.clone();
        gap[1][7] += 1; // starts 8 bytes after the first one ends
        reseal(&mut gap[1]);
        let mut ragged = fragment(&datagram(4, 4000), 1420);
        ragged[0].pop(); // a first fragment whose data is not a multiple of 8
        let len = ragged[0].len() as u16;
        ragged[0][2..4].copy_from_slice(&len.to_be_bytes());
        reseal(&mut ragged[0]);
        let mut too_big = fragment(&datagram(5, 65_535 - 28), 1420);
        let last = too_big.last_mut().unwrap();
        last.extend_from_slice(&[0; 8]); // the datagram would pass 65,535 bytes
        let len = last.len() as u16;
        last[2..4].copy_from_slice(&len.to_be_bytes());
        reseal(last);
        let mut short_header = parts.clone();
        short_header[1][0] = 0x44;
        reseal(&mut short_header[1]);
        for (name, packets) in [
            ("wrong length", wrong_length),
            ("bad checksum", bad_checksum),
            ("gap", gap),
            ("ragged", ragged),
            ("too big", too_big),
            ("short header", short_header),
        ] {
            assert_eq!(joined(&packets), packets, "{name}");
        }
        // Truncated buffers, not IPv4, empty: nothing to join, nothing panics.
        let odd = vec![vec![], vec![0x45], vec![0x60; 60], parts[0][..19].to_vec()];
        assert_eq!(joined(&odd), odd);
    }
}
