//! What the last NBIRTH and DBIRTH of each edge node and device declared,
//! so that a DATA or CMD metric without a `datatype` (Sparkplug 3.0: it
//! SHOULD NOT repeat it) is still read with its sign: an `Int32` -5 travels
//! as the unsigned 4294967291, and only the BIRTH says which it is.
//!
//! Kept by the component instance across batches. It is lost when the
//! instance is replaced (after a trap, or a SIGHUP reload) and rebuilt by
//! the next BIRTH; until then such metrics show the wire's unsigned value,
//! as they did before this table existed.

use std::collections::HashMap;

use crate::sparkplug::payload::Metric;
use crate::sparkplug::Payload;

/// Datatypes kept at most, over all nodes and devices: a bound on what a
/// namespace of publishers can make the component hold (about 100 bytes
/// each). BIRTHs past it are not learned.
pub const MAX_DECLARED: usize = 200_000;

/// Bytes the table may hold, names and node keys included: the count alone
/// let 64 BIRTHs with one 2 MB metric name each take the instance's whole
/// default memory limit (128 MiB), and the instance, replaced, lose every
/// BIRTH. 200,000 ordinary datatypes take about 20 MB. Fixed, so a
/// `transform.max_memory_mb` below about 48 leaves the table less room
/// than it may take (the README says so).
pub const MAX_BYTES: usize = 32 << 20;

/// What an entry costs beyond its name: a hash map slot and its share of
/// the table's spare capacity.
const ENTRY_BYTES: usize = 48;

/// Runs the table's own allocations: the component passes a scope that
/// takes them out of its per-batch arena (they outlive the batch).
pub type AllocScope = fn(&mut dyn FnMut());

pub struct Births {
    /// `group/edge` for a node, `group/edge/device` for a device.
    scopes: HashMap<String, Declared>,
    declared: usize,
    /// Estimated bytes held, against [`MAX_BYTES`].
    bytes: usize,
    scope: AllocScope,
}

#[derive(Default)]
struct Declared {
    by_alias: HashMap<u64, u32>,
    by_name: HashMap<String, u32>,
    bytes: usize,
}

impl Declared {
    fn len(&self) -> usize {
        self.by_alias.len() + self.by_name.len()
    }
}

/// A Sparkplug topic's message type, and the node or device it is about
/// (`group/edge` or `group/edge/device`), made only when `wanted(type)`:
/// most messages need no key, and making one allocates.
fn parse(topic: &str, wanted: impl Fn(&str) -> bool) -> Option<(&str, String)> {
    let rest = topic.strip_prefix("spBv1.0/")?;
    let mut levels = rest.splitn(4, '/');
    let group = levels.next()?;
    let kind = levels.next()?;
    if !wanted(kind) {
        return None;
    }
    let edge = levels.next()?;
    let key = match levels.next() {
        Some(device) => format!("{group}/{edge}/{device}"),
        None => format!("{group}/{edge}"),
    };
    Some((kind, key))
}

impl Default for Births {
    fn default() -> Self {
        Self::new(|f| f())
    }
}

impl Births {
    pub fn new(scope: AllocScope) -> Self {
        Self {
            scopes: HashMap::new(),
            declared: 0,
            bytes: 0,
            scope,
        }
    }

    /// Learns from a BIRTH (an NBIRTH starts the node over, devices
    /// included); other messages change nothing.
    pub fn learn(&mut self, topic: &str, payload: &Payload) {
        let Some((kind, key)) = parse(topic, |k| k == "NBIRTH" || k == "DBIRTH") else {
            return;
        };
        let scope = self.scope;
        scope(&mut || {
            if kind == "NBIRTH" {
                let devices = format!("{key}/");
                let (mut freed, mut freed_bytes) = (0, 0);
                self.scopes.retain(|k, d| {
                    let keep = k != &key && !k.starts_with(&devices);
                    if !keep {
                        freed += d.len();
                        freed_bytes += d.bytes;
                    }
                    keep
                });
                self.declared -= freed;
                self.bytes -= freed_bytes;
            } else if let Some(old) = self.scopes.remove(&key) {
                self.declared -= old.len();
                self.bytes -= old.bytes;
            }
            let mut declared = Declared {
                bytes: ENTRY_BYTES + key.len(),
                ..Declared::default()
            };
            for m in &payload.metrics {
                let Some(dt) = m.datatype else { continue };
                let most = 2 * ENTRY_BYTES + m.name.as_ref().map_or(0, String::len);
                if self.declared + declared.len() + 2 > MAX_DECLARED
                    || self.bytes + declared.bytes + most > MAX_BYTES
                {
                    break;
                }
                // Counted as held: a name or alias the BIRTH repeats only
                // replaces its datatype.
                if let Some(alias) = m.alias {
                    if declared.by_alias.insert(alias, dt).is_none() {
                        declared.bytes += ENTRY_BYTES;
                    }
                }
                if let Some(name) = &m.name {
                    if declared.by_name.insert(name.clone(), dt).is_none() {
                        declared.bytes += ENTRY_BYTES + name.len();
                    }
                }
            }
            if declared.len() > 0 {
                self.declared += declared.len();
                self.bytes += declared.bytes;
                self.scopes.insert(key.clone(), declared);
            }
        });
    }

    /// For each top-level metric of a DATA or CMD message that carries no
    /// datatype, the one its BIRTH declared (by alias, else by name);
    /// empty when there is nothing to add.
    pub fn datatypes(&self, topic: &str, payload: &Payload) -> Vec<Option<u32>> {
        if self.scopes.is_empty() {
            return Vec::new();
        }
        let data = |k: &str| matches!(k, "NDATA" | "DDATA" | "NCMD" | "DCMD");
        let Some((_, key)) = parse(topic, data) else {
            return Vec::new();
        };
        let Some(declared) = self.scopes.get(&key) else {
            return Vec::new();
        };
        let lookup = |m: &Metric| {
            if m.datatype.is_some() {
                return None;
            }
            m.alias
                .and_then(|a| declared.by_alias.get(&a))
                .or_else(|| m.name.as_ref().and_then(|n| declared.by_name.get(n)))
                .copied()
        };
        let found: Vec<Option<u32>> = payload.metrics.iter().map(lookup).collect();
        if found.iter().all(Option::is_none) {
            Vec::new()
        } else {
            found
        }
    }

    /// Datatypes held now, over all nodes and devices.
    pub fn len(&self) -> usize {
        self.declared
    }

    /// Estimated bytes held now (at most [`MAX_BYTES`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.declared == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::datatype::INT32;

    fn birth(names: &[String]) -> Payload {
        Payload {
            metrics: names
                .iter()
                .map(|n| Metric {
                    name: Some(n.clone()),
                    datatype: Some(INT32),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// BIRTHs with huge metric names fill the byte budget, not the
    /// instance's memory: past it nothing more is learned, and a node born
    /// again gives its bytes back.
    #[test]
    fn huge_names_stop_at_the_byte_budget_and_a_new_birth_frees_them() {
        let mut births = Births::default();
        let huge = "m".repeat(2 << 20);
        for edge in 0..64 {
            births.learn(
                &format!("spBv1.0/g/NBIRTH/e{edge}"),
                &birth(std::slice::from_ref(&huge)),
            );
            assert!(
                births.bytes() <= MAX_BYTES,
                "{} after {edge}",
                births.bytes()
            );
        }
        // 15 of them fit in 32 MiB with their overheads; the rest were refused.
        assert_eq!(births.len(), 15);
        births.learn("spBv1.0/g/NBIRTH/e0", &birth(&["small".to_owned()]));
        assert_eq!(births.len(), 15);
        assert!(births.bytes() < 15 * (2 << 20));
        // Room again: the next huge one is learned.
        births.learn("spBv1.0/g/NBIRTH/e40", &birth(&[huge]));
        assert_eq!(births.len(), 16);
        assert!(births.bytes() <= MAX_BYTES);
    }
}
