//! The whoami exchange (docs/protocol.md §4) and what it settles: the
//! encodings to send with (the peer's tags) and the `x-errors` extension
//! (§9). The driver sends our whoami as a REQUEST and waits; the session
//! answers the peer's and takes in the peer's answer.

use std::sync::atomic::Ordering;

use super::{Handler, Session};
use crate::builtin::{self, Whoami, WHOAMI_ID};
use crate::codec::compress::Encoding;
use crate::codec::Kind;
use crate::errors::Result;
use crate::exchange::OwnedMessage;
use crate::stats::Stats;
use crate::writer::{Data, Out, Urgency};

impl<H: Handler> Session<H> {
    pub fn whoami(&self) -> Whoami {
        Whoami {
            name: self.name.clone(),
            version: self.version,
            buffersize: self.settings.buffersize,
            tags: self.own_tags(),
        }
    }

    /// Our whoami tags: the encodings we receive, then the extension's tag.
    fn own_tags(&self) -> String {
        let mut tags = self.settings.tags_csv();
        if self.settings.errors_ext {
            if !tags.is_empty() {
                tags.push(',');
            }
            tags.push_str(builtin::ERRORS_TAG);
        }
        tags
    }

    /// Whether errors are reported to the peer (and read from it): both
    /// sides advertised `x-errors`.
    pub fn errors_ext(&self) -> bool {
        self.errors_ext.load(Ordering::Acquire)
    }

    /// Notes the peer's whoami tags, from its whoami REQUEST or RESPONSE.
    pub(crate) fn note_peer_tags(&self, tags: &str) {
        if self.settings.errors_ext && builtin::has_errors_tag(tags) {
            self.errors_ext.store(true, Ordering::Release);
        }
    }

    /// Takes in the peer's RESPONSE to our whoami: from now on we send with
    /// its encodings. Our half of the handshake is then done; the other
    /// half is `answered_peer()`.
    pub fn handshake_reply(&self, reply: &OwnedMessage) -> Result<Whoami> {
        let peer = Whoami::decode(&reply.data)?;
        self.note_peer_tags(&peer.tags);
        self.sink
            .set_encodings(peer_encodings(&peer.tags, &self.name));
        *self.peer.lock() = Some(peer.clone());
        log::info!(
            "gofast[{}]: handshake done: peer {:?}, version {}, tags {:?}",
            self.name,
            peer.name,
            peer.version,
            peer.tags
        );
        Ok(peer)
    }

    /// Whether we have answered the peer's whoami REQUEST.
    pub fn answered_peer(&self) -> bool {
        self.answered_peer.load(Ordering::Acquire)
    }

    /// The peer's whoami REQUEST: its tags count at once (the extension
    /// may be on before our handshake's RESPONSE arrives); answered with ours.
    pub(super) fn on_peer_whoami(&self, opaque: u64, data: &[u8]) {
        if let Ok(w) = Whoami::decode(data) {
            self.note_peer_tags(&w.tags);
        }
        let data = self.whoami().encode();
        let out = Out::Msg {
            kind: Kind::Request,
            opaque,
            id: WHOAMI_ID,
            data: Data::copied(&data),
            compress: false,
        };
        if self.sink.push(out, Urgency::Direct).is_ok() {
            Stats::incr(&self.stats.n_tx);
            Stats::incr(&self.stats.n_txresp);
        }
        self.answered_peer.store(true, Ordering::Release);
    }
}

/// The encodings the peer asked for, in its order; an unknown one is logged
/// and skipped (the peer then gets that layer uncompressed, which it reads).
pub(crate) fn peer_encodings(tags: &str, name: &str) -> Vec<Encoding> {
    tags.split(',')
        .map(str::trim)
        // An extension's tag is no encoding (and is known: no warning).
        .filter(|t| !t.is_empty() && *t != builtin::ERRORS_TAG)
        .filter_map(|t| {
            let e = Encoding::from_name(t);
            if e.is_none() {
                log::warn!("gofast[{name}]: peer asks for unknown tag {t:?}; sending without it");
            }
            e
        })
        .collect()
}
