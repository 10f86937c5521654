//! The `/transactions/sync` cursor: an item and a position in its change log, opaque to
//! clients.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A position in an item's change log, as handed out in `next_cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub item_index: u64,
    pub pos: usize,
    pub generation: u64,
    /// Issued with `has_more: true`, i.e. in the middle of a pagination loop.
    pub paging: bool,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!("v1:{}:{}:{}:{}", self.item_index, self.pos, self.generation, u8::from(self.paging));
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = raw.split(':');
        if parts.next()? != "v1" {
            return None;
        }
        let c = Cursor {
            item_index: parts.next()?.parse().ok()?,
            pos: parts.next()?.parse().ok()?,
            generation: parts.next()?.parse().ok()?,
            paging: parts.next()? == "1",
        };
        parts.next().is_none().then_some(c)
    }
}
