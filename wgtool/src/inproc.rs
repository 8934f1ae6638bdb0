//! wgtool's side of the in-process tunnel (the `inproc` crate): the peer kept for an org
//! when no tunnel file is given, the checkup `wgtool doctor --inproc` runs, and the
//! commands handed to the tunnel.

pub(crate) mod checkup;
pub(crate) mod kept;

use crate::cli::TransportArgs;

impl From<&TransportArgs> for inproc::ReachArgs {
    fn from(a: &TransportArgs) -> inproc::ReachArgs {
        inproc::ReachArgs {
            transport: a.transport,
            websocket_port: a.websocket_port,
            websocket_fingerprint: a.websocket_fingerprint.clone(),
            websocket_plain: a.websocket_plain,
        }
    }
}
