//! A seeded random sequence of writes of every kind, most of which apply and some of which
//! are refused, for tests that follow a registry through many revisions.

use registry::{Change, MachineState, NodeSpec, Record, Registry, TokenScope};

/// xorshift64*: small and seeded.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What the writer knows of the registry, to name existing records in its next change.
pub struct Churn {
    pub rng: Rng,
    machines: Vec<registry::MachineId>,
    peers: Vec<(String, String)>,
    tokens: Vec<String>,
    counter: u64,
    pub applied: usize,
    pub refused: usize,
}

const ORGS: &[&str] = &["acme", "globex"];
const NODES: &[&str] = &["churn-a", "churn-b", "churn-c"];

fn key(n: u64) -> registry::PublicKey {
    let mut bytes = [7u8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    registry::PublicKey::from_bytes(bytes)
}

fn node(name: &str, n: u64, port: u16) -> Change {
    Change::RegisterNode(NodeSpec {
        name: name.into(),
        region: "iad".into(),
        public_key: key(n),
        endpoint: std::net::SocketAddr::from(([192, 0, 2, 9], port)),
        gateway: name != "churn-c",
    })
}

impl Churn {
    /// Two orgs and three nodes (two of them gateways) in `reg`, which must be empty.
    pub fn start(reg: &dyn Registry, seed: u64) -> Churn {
        for org in ORGS {
            reg.apply(&Change::CreateOrg {
                name: org.to_string(),
            })
            .unwrap();
        }
        for (i, name) in NODES.iter().enumerate() {
            reg.apply(&node(name, 1 << 40 | i as u64, 51820)).unwrap();
        }
        Churn {
            rng: Rng(seed | 1),
            machines: Vec::new(),
            peers: Vec::new(),
            tokens: Vec::new(),
            counter: 0,
            applied: 0,
            refused: 0,
        }
    }

    /// Another writer of a registry that [`Churn::start`] set up, knowing nothing it made.
    pub fn join(seed: u64) -> Churn {
        Churn {
            rng: Rng(seed | 1),
            machines: Vec::new(),
            peers: Vec::new(),
            tokens: Vec::new(),
            counter: seed << 24,
            applied: 0,
            refused: 0,
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.below(items.len())]
    }

    /// The next change.
    pub fn change(&mut self) -> Change {
        self.counter += 1;
        let n = self.counter;
        let org = self.pick(ORGS).to_string();
        match self.rng.below(100) {
            0..=29 => Change::AddMachine {
                org,
                app: format!("app-{}", self.rng.below(20)),
                region: "iad".into(),
                node: self.pick(NODES).into(),
                process_group: None,
            },
            30..=31 => Change::AddMachine {
                org,
                app: "Bad_App".into(),
                region: "iad".into(),
                node: "churn-a".into(),
                process_group: None,
            },
            32..=41 if !self.machines.is_empty() => Change::SetMachineState {
                id: self.machines[self.rng.below(self.machines.len())],
                state: if self.rng.below(2) == 0 {
                    MachineState::Started
                } else {
                    MachineState::Stopped
                },
            },
            42..=46 if !self.machines.is_empty() => Change::MoveMachine {
                id: self.machines[self.rng.below(self.machines.len())],
                node: self.pick(NODES).into(),
            },
            47..=56 if !self.machines.is_empty() => {
                let i = self.rng.below(self.machines.len());
                Change::RemoveMachine {
                    id: self.machines.swap_remove(i),
                }
            }
            57..=71 => Change::AddPeer {
                org,
                name: format!("peer-{n}"),
                region: Some("iad".into()),
                gateway: None,
                public_key: key(n),
                routes: if self.rng.below(4) == 0 {
                    vec![format!("2001:db8:{:x}:{:x}::/64", n >> 16, n & 0xffff)
                        .parse()
                        .unwrap()]
                } else {
                    vec![]
                },
                expires: None,
            },
            72..=79 if !self.peers.is_empty() => {
                let i = self.rng.below(self.peers.len());
                let (org, name) = self.peers.swap_remove(i);
                Change::RemovePeer { org, name }
            }
            80..=82 => Change::PeerOrgs {
                a: "acme".into(),
                b: "globex".into(),
            },
            83..=85 => Change::UnpeerOrgs {
                a: "globex".into(),
                b: "acme".into(),
            },
            86..=88 => Change::CreateToken {
                id: format!("tok{n:016x}"),
                org,
                scope: TokenScope::Peer,
                secret_hash: format!("{n:064x}"),
                expires: None,
                max_uses: Some(3),
                region: None,
                name_prefix: None,
            },
            89..=90 if !self.tokens.is_empty() => Change::RevokeToken {
                id: self.tokens.swap_remove(self.rng.below(self.tokens.len())),
            },
            91..=93 if !self.tokens.is_empty() => {
                let id = self.tokens[self.rng.below(self.tokens.len())].clone();
                let hash = format!("{:064x}", u64::from_str_radix(&id[3..], 16).unwrap_or(0));
                let t_org = org.clone();
                Change::WithToken {
                    id,
                    secret_hash: hash,
                    change: Box::new(Change::AddPeer {
                        org: t_org,
                        name: format!("tpeer-{n}"),
                        region: Some("iad".into()),
                        gateway: None,
                        public_key: key(n),
                        routes: vec![],
                        expires: None,
                    }),
                }
            }
            94..=95 => Change::CreateOrg {
                name: format!("tmp-{}", self.rng.below(3)),
            },
            96..=97 => Change::RemoveOrg {
                name: format!("tmp-{}", self.rng.below(3)),
            },
            _ => {
                let name = self.pick(NODES);
                let i = NODES.iter().position(|x| *x == name).unwrap_or(0);
                node(name, 1 << 40 | i as u64, 51820 + self.rng.below(3) as u16)
            }
        }
    }

    /// Applies the next change to `reg`, remembering what it made.
    pub fn step(&mut self, reg: &dyn Registry) {
        let change = self.change();
        match reg.apply(&change) {
            Ok(applied) => {
                self.applied += 1;
                match applied.record {
                    Some(Record::Machine(m)) if matches!(change, Change::AddMachine { .. }) => {
                        self.machines.push(m.id)
                    }
                    Some(Record::Peer(p)) => self.peers.push((p.org, p.name)),
                    Some(Record::Token(t)) if matches!(change, Change::CreateToken { .. }) => {
                        self.tokens.push(t.id)
                    }
                    _ => {}
                }
            }
            Err(_) => self.refused += 1,
        }
    }
}
