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

/// Runs the table's own allocations: the component passes a scope that
/// takes them out of its per-batch arena (they outlive the batch).
pub type AllocScope = fn(&mut dyn FnMut());

pub struct Births {
    /// `group/edge` for a node, `group/edge/device` for a device.
    scopes: HashMap<String, Declared>,
    declared: usize,
    scope: AllocScope,
}

#[derive(Default)]
struct Declared {
    by_alias: HashMap<u64, u32>,
    by_name: HashMap<String, u32>,
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
                let mut freed = 0;
                self.scopes.retain(|k, d| {
                    let keep = k != &key && !k.starts_with(&devices);
                    if !keep {
                        freed += d.len();
                    }
                    keep
                });
                self.declared -= freed;
            } else if let Some(old) = self.scopes.remove(&key) {
                self.declared -= old.len();
            }
            let mut declared = Declared::default();
            for m in &payload.metrics {
                let Some(dt) = m.datatype else { continue };
                if self.declared + declared.len() + 2 > MAX_DECLARED {
                    break;
                }
                if let Some(alias) = m.alias {
                    declared.by_alias.insert(alias, dt);
                }
                if let Some(name) = &m.name {
                    declared.by_name.insert(name.clone(), dt);
                }
            }
            if declared.len() > 0 {
                self.declared += declared.len();
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

    pub fn is_empty(&self) -> bool {
        self.declared == 0
    }
}
