//! The key layout under a prefix, one key per record, values in JSON:
//!
//! ```text
//! <prefix>/meta/revision        {"revision":N,"write":"<id>"}  bumped by every write
//! <prefix>/meta/next_network    N
//! <prefix>/orgs/<name>          <prefix>/nodes/<name>          <prefix>/apps/<org>/<app>
//! <prefix>/machines/<id>        <prefix>/peers/<org>/<name>
//! <prefix>/peerings/<a>/<b>     (org names, a < b)
//! <prefix>/tokens/<id>          (the secret's hash, never the secret)
//! <prefix>/meta/log/<revision>  the revision's Delta (20 digits, so keys sort by revision)
//! <prefix>/meta/index/<gen>/... what a write looks up instead of reading everything (`index`)
//! ```
//!
//! The change log and the index lie under `meta/`, which readers of records skip, and outside
//! the ranges a snapshot reads, so that their size costs a snapshot nothing.
//!
//! Every write compares `meta/revision`'s etcd mod-revision with the one it read and puts a
//! new value, so writers serialise on that one key and followers watch only it. The mark also
//! names the index generation that is right for the records (`index`); a writer of a version
//! without an index leaves it out, and the next writer that has one builds it again.

use serde::{Deserialize, Serialize};

use crate::machine_id::MachineId;
use crate::model::{Record, RecordKey, Revision, Snapshot};
use crate::view::RecordRef;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The value of `meta/revision`: the registry revision and which write made it, so a writer
/// whose commit's answer was lost can tell whether it landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionMark {
    pub revision: u64,
    pub write: String,
    /// The index generation that holds what the records say (see `index`); absent when the
    /// last writer kept no index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn revision(&self) -> String {
        format!("{}/meta/revision", self.prefix)
    }

    pub fn next_network(&self) -> String {
        format!("{}/meta/next_network", self.prefix)
    }

    /// First key of the registry's range.
    pub fn start(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// One past the last key of the registry's range (`/` + 1 is `0`).
    pub fn end(&self) -> String {
        format!("{}0", self.prefix)
    }

    /// The change log entry of `revision`.
    pub fn log(&self, revision: u64) -> String {
        format!("{}/meta/log/{revision:020}", self.prefix)
    }

    /// First key of the change log's range.
    pub fn log_start(&self) -> String {
        format!("{}/meta/log/", self.prefix)
    }

    /// One past the last key of the change log's range.
    pub fn log_end(&self) -> String {
        format!("{}/meta/log0", self.prefix)
    }

    /// First key of the index's range (every generation).
    pub fn index_start(&self) -> String {
        format!("{}/meta/index/", self.prefix)
    }

    /// One past the last key of the index's range.
    pub fn index_end(&self) -> String {
        format!("{}/meta/index0", self.prefix)
    }

    /// The folder of index generation `gen`.
    pub fn index(&self, gen: &str) -> String {
        format!("{}/meta/index/{gen}/", self.prefix)
    }

    /// The folder of the records of one kind (`orgs`, `nodes`, `peerings`...).
    pub fn kind(&self, kind: &str) -> String {
        format!("{}/{kind}/", self.prefix)
    }

    /// The first key after the folder of `kind`.
    pub fn kind_end(&self, kind: &str) -> String {
        format!("{}/{kind}0", self.prefix)
    }

    /// The folder of an org's apps.
    pub fn apps_of(&self, org: &str) -> String {
        format!("{}/apps/{org}/", self.prefix)
    }

    /// The record that `value` holds under `key`, which must be the record's own key.
    pub fn decode_record(&self, key: &str, value: &[u8]) -> Result<Record, String> {
        let record = Record::from_json(value)
            .map_err(|e| format!("key `{key}` does not hold a record: {e}"))?;
        let expected = self.record(&record.key());
        if expected != key {
            return Err(format!("key `{key}` holds the record of `{expected}`"));
        }
        Ok(record)
    }

    /// [`Keys::decode_record`] into `each`, a machine borrowed from `value` where
    /// [`Record::from_json`] would read it straight: the same records and the same refusals,
    /// without a string made for each field, or for the key it is checked against.
    pub fn decode_ref(
        &self,
        key: &str,
        value: &[u8],
        each: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<(), String> {
        let Some(json) = Record::machine_json(value) else {
            each(RecordRef::Record(self.decode_record(key, value)?));
            return Ok(());
        };
        let json = json.map_err(|e| format!("key `{key}` does not hold a record: {e}"))?;
        let m = json.view();
        if !self.is_machine_key(key, m.id) {
            let expected = self.record(&RecordKey::Machine { id: m.id });
            return Err(format!("key `{key}` holds the record of `{expected}`"));
        }
        each(RecordRef::Machine(m));
        Ok(())
    }

    fn is_machine_key(&self, key: &str, id: MachineId) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .and_then(|k| k.strip_prefix("/machines/"))
            .is_some_and(|k| k.as_bytes() == id.to_ascii())
    }

    pub fn record(&self, key: &RecordKey) -> String {
        let p = &self.prefix;
        match key {
            RecordKey::Org { name } => format!("{p}/orgs/{name}"),
            RecordKey::Node { name } => format!("{p}/nodes/{name}"),
            RecordKey::App { org, name } => format!("{p}/apps/{org}/{name}"),
            RecordKey::Machine { id } => format!("{p}/machines/{id}"),
            RecordKey::Peer { org, name } => format!("{p}/peers/{org}/{name}"),
            RecordKey::Peering { a, b } => {
                // One key per pair whichever order the caller named it in.
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                format!("{p}/peerings/{a}/{b}")
            }
            RecordKey::Token { id } => format!("{p}/tokens/{id}"),
        }
    }
}

/// Builds a snapshot from the key-values of the registry's range. Returns the snapshot and
/// the etcd mod-revision of `meta/revision` (0 when the registry was never written).
pub fn decode(keys: &Keys, kvs: &[(String, Vec<u8>, i64)]) -> Result<(Snapshot, i64), String> {
    let mut decoder = Decoder::new(keys);
    for (key, value, mod_revision) in kvs {
        decoder.take(key, value, *mod_revision)?;
    }
    Ok(decoder.finish())
}

/// [`decode`] a key-value at a time, so that a whole read can be decoded while its later
/// pages are still on the way.
pub struct Decoder {
    snap: Snapshot,
    mark_mod: i64,
    revision_key: String,
    network_key: String,
    meta: String,
    keys: Keys,
}

impl Decoder {
    pub fn new(keys: &Keys) -> Decoder {
        Decoder {
            snap: Snapshot {
                next_network: 1,
                ..Snapshot::default()
            },
            mark_mod: 0,
            revision_key: keys.revision(),
            network_key: keys.next_network(),
            meta: format!("{}meta/", keys.start()),
            keys: keys.clone(),
        }
    }

    pub fn take(&mut self, key: &str, value: &[u8], mod_revision: i64) -> Result<(), String> {
        if key == self.revision_key {
            let mark: RevisionMark = serde_json::from_slice(value)
                .map_err(|e| format!("key `{key}` is not a revision mark: {e}"))?;
            self.snap.revision = Revision(mark.revision);
            self.mark_mod = mod_revision;
            return Ok(());
        }
        if key == self.network_key {
            self.snap.next_network = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("key `{key}` is not a network id"))?;
            return Ok(());
        }
        if key.starts_with(&self.meta) {
            // Room for later metadata; older readers skip it.
            return Ok(());
        }
        let record = self.keys.decode_record(key, value)?;
        self.snap.put(record);
        Ok(())
    }

    /// The snapshot, and the etcd mod-revision of `meta/revision` (0 if there was none).
    pub fn finish(self) -> (Snapshot, i64) {
        (self.snap, self.mark_mod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Org, Peering, Token, TokenScope};
    use crate::OrgNetwork;

    #[test]
    fn records_round_trip_through_their_keys() {
        let keys = Keys::new("/t");
        let org = Record::Org(Org {
            name: "acme".into(),
            network: OrgNetwork(7),
        });
        let mark = RevisionMark {
            revision: 4,
            write: "ab".into(),
            index: None,
        };
        let kvs = vec![
            (keys.revision(), serde_json::to_vec(&mark).unwrap(), 42),
            (keys.next_network(), b"8".to_vec(), 41),
            (
                keys.record(&org.key()),
                serde_json::to_vec(&org).unwrap(),
                40,
            ),
        ];
        let (snap, mark_mod) = decode(&keys, &kvs).unwrap();
        assert_eq!(mark_mod, 42);
        assert_eq!(snap.revision, Revision(4));
        assert_eq!(snap.next_network, 8);
        assert_eq!(snap.orgs["acme"].network, OrgNetwork(7));
    }

    #[test]
    fn a_peering_has_one_key_whichever_order_it_is_named_in() {
        let keys = Keys::new("/t");
        let key = "/t/peerings/acme/globex";
        for (a, b) in [("acme", "globex"), ("globex", "acme")] {
            let k = RecordKey::Peering {
                a: a.into(),
                b: b.into(),
            };
            assert_eq!(keys.record(&k), key);
        }
        let peering = Record::Peering(Peering::new("globex", "acme"));
        let kvs = vec![(key.to_string(), serde_json::to_vec(&peering).unwrap(), 1)];
        let (snap, _) = decode(&keys, &kvs).unwrap();
        assert!(snap.peered("globex", "acme"));
        // Stored backwards by hand, it is still the pair's own key.
        let backwards = br#"{"kind":"peering","a":"globex","b":"acme"}"#.to_vec();
        let (snap, _) = decode(&keys, &[(key.to_string(), backwards, 1)]).unwrap();
        assert!(snap.peered("acme", "globex"));
    }

    #[test]
    fn a_token_is_keyed_by_its_id() {
        let keys = Keys::new("/t");
        let token = Record::Token(Token {
            id: "tok00000000000000a1".into(),
            org: "acme".into(),
            scope: TokenScope::Peer,
            secret_hash: "ab".repeat(32),
            created: 1,
            expires: Some(2),
            max_uses: Some(3),
            uses: 1,
            region: Some("iad".into()),
            name_prefix: Some("ci-".into()),
            revoked: None,
        });
        let key = keys.record(&token.key());
        assert_eq!(key, "/t/tokens/tok00000000000000a1");
        let kvs = vec![(key, serde_json::to_vec(&token).unwrap(), 1)];
        let (snap, _) = decode(&keys, &kvs).unwrap();
        assert_eq!(snap.records().collect::<Vec<_>>(), vec![token]);
    }

    #[test]
    fn a_machine_is_keyed_by_its_id_as_text_and_a_bad_id_is_reported() {
        let keys = Keys::new("/t");
        let id: crate::MachineId = "4d89699c030518".parse().unwrap();
        assert_eq!(
            keys.record(&RecordKey::Machine { id }),
            "/t/machines/4d89699c030518"
        );
        let value = br#"{"kind":"machine","id":"web-1","org":"acme","app":"web","region":"iad",
            "node":"n1","process_group":"app","state":"started","addr":"fdaa::2"}"#;
        let kvs = vec![("/t/machines/web-1".to_string(), value.to_vec(), 1)];
        let err = decode(&keys, &kvs).unwrap_err();
        assert!(
            err.contains(
                "key `/t/machines/web-1` does not hold a record: machine id `web-1`: \
                 must be 14 lowercase hex characters"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_record_under_the_wrong_key_is_reported() {
        let keys = Keys::new("/t");
        let org = Record::Org(Org {
            name: "acme".into(),
            network: OrgNetwork(7),
        });
        let kvs = vec![(
            "/t/orgs/other".to_string(),
            serde_json::to_vec(&org).unwrap(),
            1,
        )];
        let err = decode(&keys, &kvs).unwrap_err();
        assert!(err.contains("holds the record of `/t/orgs/acme`"), "{err}");
    }

    /// A machine read borrowed is checked against its key as a whole one is: the same
    /// record under its own key, the same refusal under another's (an id one digit off, the
    /// id under another prefix or kind).
    #[test]
    fn a_machine_read_borrowed_is_checked_against_its_key_as_a_whole_one_is() {
        let keys = Keys::new("/t");
        let value = br#"{"kind":"machine","id":"4d89699c030518","org":"acme","app":"web","region":"iad","node":"n1","process_group":"app","state":"started","addr":"fdaa::2"}"#;
        let by_ref = |key: &str| {
            let mut got = None;
            (keys.decode_ref(key, value, &mut |r| got = Some(r.into_record())))
                .map(|()| got.unwrap())
        };
        let good = "/t/machines/4d89699c030518";
        assert!(matches!(by_ref(good), Ok(Record::Machine(_))));
        assert_eq!(by_ref(good), keys.decode_record(good, value));
        for key in [
            "/t/machines/4d89699c030519",
            "/t/machines/4d89699c03051",
            "/t/machines/4d89699c030518/",
            "/u/machines/4d89699c030518",
            "/t/orgs/4d89699c030518",
            "/t/machines/4D89699C030518",
        ] {
            let err = by_ref(key).unwrap_err();
            assert!(
                err.contains("holds the record of `/t/machines/4d89699c030518`"),
                "{key}: {err}"
            );
            assert_eq!(Err(err), keys.decode_record(key, value), "{key}");
        }
    }
}
