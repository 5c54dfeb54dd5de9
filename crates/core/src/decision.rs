//! What a purchase attempt came to ([`Decision`]) and where that was decided ([`Decided`]).
//! Their wire names ([`Decision::as_str`], [`Decided::as_str`]) are what the decision logs,
//! the fleet's counters (`edge:sold_out`) and the analytics records carry; they are stable.

use crate::error::Code;
use serde::{Serialize, Serializer};

/// Where a decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decided {
    /// At the edge, with no origin command.
    Edge,
    /// By (or because of) the origin.
    Origin,
}

impl Decided {
    pub fn as_str(self) -> &'static str {
        match self {
            Decided::Edge => "edge",
            Decided::Origin => "origin",
        }
    }
}

/// What a purchase attempt came to: an order placed, an earlier order replayed, or a refusal
/// with the error code it was answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    Placed,
    Replayed,
    Refused(Code),
}

impl Decision {
    /// `placed`, `replayed`, or the refusal's error code.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Placed => "placed",
            Decision::Replayed => "replayed",
            Decision::Refused(code) => code.as_str(),
        }
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_stable() {
        assert_eq!(Decision::Placed.as_str(), "placed");
        assert_eq!(Decision::Replayed.as_str(), "replayed");
        assert_eq!(Decision::Refused(Code::SoldOut).as_str(), "sold_out");
        assert_eq!(
            serde_json::to_string(&Decision::Refused(Code::ItemLimitReached)).unwrap(),
            "\"item_limit_reached\""
        );
        assert_eq!(
            (Decided::Edge.as_str(), Decided::Origin.as_str()),
            ("edge", "origin")
        );
    }
}
