use super::*;

fn sample(per_peer: Vec<PeerSample>) -> Sample {
    Sample {
        counters: Counters::default(),
        fragments_joined: 0,
        nat64_bindings: 0,
        per_peer,
        peers: 0,
        peers_with_session: 0,
        peers_registered: 0,
        peers_active: 0,
        registry_reachable: None,
        registry_revision: 0,
        registry_failures: 0,
        peers_on_websocket: 0,
        websocket: None,
    }
}

#[test]
fn per_peer_series_carry_name_and_key_with_values_escaped() {
    let text = render(&sample(vec![
        PeerSample {
            name: "node/b".into(),
            public_key: "k+/=".into(),
            tx_bytes: 148,
            rx_bytes: 92,
            latest_handshake: 1_795_000_000,
        },
        PeerSample {
            name: "odd\"name\\\n".into(),
            public_key: "k2".into(),
            tx_bytes: 0,
            rx_bytes: 0,
            latest_handshake: 0,
        },
    ]));
    for want in [
        "# TYPE meshd_peer_transmit_bytes_total counter",
        "meshd_peer_transmit_bytes_total{peer=\"node/b\",public_key=\"k+/=\"} 148",
        "meshd_peer_receive_bytes_total{peer=\"node/b\",public_key=\"k+/=\"} 92",
        "meshd_peer_latest_handshake_seconds{peer=\"node/b\",public_key=\"k+/=\"} 1795000000",
        "meshd_peer_latest_handshake_seconds{peer=\"odd\\\"name\\\\\\n\",public_key=\"k2\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "no line {want:?} in:\n{text}"
        );
    }
    // Every sample line is `name{labels} value` on one line.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<u64>().is_ok(), "{line:?}");
    }
}

#[test]
fn no_peers_no_per_peer_samples() {
    let text = render(&sample(Vec::new()));
    assert!(text.contains("# TYPE meshd_peer_receive_bytes_total counter"));
    assert!(!text.contains("meshd_peer_receive_bytes_total{"));
}
