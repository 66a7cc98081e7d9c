//! What the last NBIRTH and DBIRTH of each edge node and device declared,
//! so that a DATA or CMD metric without a `datatype` (Sparkplug 3.0: it
//! SHOULD NOT repeat it) is still read with its sign: an `Int32` -5 travels
//! as the unsigned 4294967291, and only the BIRTH says which it is.
//!
//! Kept by the component instance across batches. It is lost when the
//! instance is replaced (after a trap, or a SIGHUP reload) and rebuilt by
//! the next BIRTH; until then such metrics show the wire's unsigned value,
//! as they did before this table existed.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::sparkplug::payload::{metric, Metric};
use crate::sparkplug::Payload;

/// Datatypes kept at most, over all nodes and devices: a bound on what a
/// namespace of publishers can make the component hold (about 100 bytes
/// each). A BIRTH that finds the table full makes room by forgetting the
/// oldest BIRTHs: nodes that have gone quiet never free theirs, and a
/// table that refused new ones would read every node born after it filled
/// without signs until the instance is replaced.
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

/// What a template's member map costs beyond its entries: the `Rc`, the
/// map itself and its smallest table. Without it 30,000 nested templates
/// of one member each were charged a third of what they take.
const MAP_BYTES: usize = 160;

/// Runs the table's own allocations: the component passes a scope that
/// takes them out of its per-batch arena (they outlive the batch).
pub type AllocScope = fn(&mut dyn FnMut());

pub struct Births {
    /// `group/edge` for a node, `group/edge/device` for a device.
    scopes: HashMap<String, Scope>,
    /// The scopes by when they were born, oldest first: what room for a
    /// new BIRTH is taken from.
    born: BTreeMap<u64, String>,
    next_birth: u64,
    declared: usize,
    /// Estimated bytes held, against [`MAX_BYTES`].
    bytes: usize,
    scope: AllocScope,
}

#[derive(Default)]
struct Scope {
    by_alias: HashMap<u64, Decl>,
    by_name: HashMap<String, Decl>,
    bytes: usize,
    /// Its key in [`Births::born`].
    birth: u64,
}

impl Scope {
    fn len(&self) -> usize {
        self.by_alias.len() + self.by_name.len()
    }
}

/// What a BIRTH declared for one metric: its datatype and, for a template
/// instance, its members' (a DATA message leaves those out too).
#[derive(Clone)]
struct Decl {
    datatype: u32,
    members: Option<Rc<Members>>,
}

/// The datatypes a BIRTH declared for a template's members, by name,
/// nested templates within.
#[derive(Default)]
pub struct Members(HashMap<String, Decl>);

impl Members {
    /// What the BIRTH declared for member `name`.
    pub fn get(&self, name: &str) -> Option<Declared<'_>> {
        self.0.get(name).map(Decl::as_declared)
    }

    /// The members of `metrics` that declare a datatype, and the bytes
    /// they take; `None` when none does.
    fn of(metrics: &[Metric]) -> Option<(Members, usize)> {
        let mut members = Members::default();
        let mut bytes = 0;
        for m in metrics {
            let (Some(name), Some(dt)) = (&m.name, m.datatype) else {
                continue;
            };
            let nested = template_members(m);
            bytes += ENTRY_BYTES + name.len() + nested.as_ref().map_or(0, |n| n.1);
            members.0.insert(
                name.clone(),
                Decl {
                    datatype: dt,
                    members: nested.map(|n| Rc::new(n.0)),
                },
            );
        }
        (!members.0.is_empty()).then_some((members, bytes + MAP_BYTES))
    }
}

/// The members a template instance's metrics declare, if `m` is one.
fn template_members(m: &Metric) -> Option<(Members, usize)> {
    match &m.value {
        Some(metric::Value::TemplateValue(t)) => Members::of(&t.metrics),
        _ => None,
    }
}

impl Decl {
    fn as_declared(&self) -> Declared<'_> {
        Declared {
            datatype: self.datatype,
            members: self.members.as_deref(),
        }
    }
}

/// What a BIRTH declared for a metric that carries no datatype: how to
/// read its value, and for a template its members'.
#[derive(Clone, Copy)]
pub struct Declared<'a> {
    pub datatype: u32,
    pub members: Option<&'a Members>,
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
            born: BTreeMap::new(),
            next_birth: 0,
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
                let born = &mut self.born;
                self.scopes.retain(|k, d| {
                    let keep = k != &key && !k.starts_with(&devices);
                    if !keep {
                        freed += d.len();
                        freed_bytes += d.bytes;
                        born.remove(&d.birth);
                    }
                    keep
                });
                self.declared -= freed;
                self.bytes -= freed_bytes;
            } else {
                self.forget(&key);
            }
            // The key twice: in `scopes` and in `born`.
            let mut declared = Scope {
                bytes: 2 * (ENTRY_BYTES + key.len()),
                ..Scope::default()
            };
            for m in &payload.metrics {
                let Some(dt) = m.datatype else { continue };
                let members = template_members(m);
                let members_bytes = members.as_ref().map_or(0, |m| m.1);
                let decl = Decl {
                    datatype: dt,
                    members: members.map(|m| Rc::new(m.0)),
                };
                let most = 2 * ENTRY_BYTES + m.name.as_ref().map_or(0, String::len) + members_bytes;
                while self.declared + declared.len() + 2 > MAX_DECLARED
                    || self.bytes + declared.bytes + most > MAX_BYTES
                {
                    if !self.forget_oldest() {
                        break;
                    }
                }
                if self.declared + declared.len() + 2 > MAX_DECLARED
                    || self.bytes + declared.bytes + most > MAX_BYTES
                {
                    // Larger than the whole table: the rest of this BIRTH
                    // is not learned.
                    break;
                }
                // Counted as held: a name or alias the BIRTH repeats only
                // replaces its datatype (its members, counted once more,
                // are an overestimate).
                declared.bytes += members_bytes;
                if let Some(alias) = m.alias {
                    if declared.by_alias.insert(alias, decl.clone()).is_none() {
                        declared.bytes += ENTRY_BYTES;
                    }
                }
                if let Some(name) = &m.name {
                    if declared.by_name.insert(name.clone(), decl).is_none() {
                        declared.bytes += ENTRY_BYTES + name.len();
                    }
                }
            }
            if declared.len() > 0 {
                self.declared += declared.len();
                self.bytes += declared.bytes;
                declared.birth = self.next_birth;
                self.next_birth += 1;
                self.born.insert(declared.birth, key.clone());
                self.scopes.insert(key.clone(), declared);
            }
        });
    }

    /// Drops what `key`'s last BIRTH declared.
    fn forget(&mut self, key: &str) {
        if let Some(old) = self.scopes.remove(key) {
            self.declared -= old.len();
            self.bytes -= old.bytes;
            self.born.remove(&old.birth);
        }
    }

    /// Drops the oldest BIRTH held; false when none is.
    fn forget_oldest(&mut self) -> bool {
        match self.born.pop_first() {
            Some((_, key)) => {
                if let Some(old) = self.scopes.remove(&key) {
                    self.declared -= old.len();
                    self.bytes -= old.bytes;
                }
                true
            }
            None => false,
        }
    }

    /// For each top-level metric of a DATA or CMD message, what its BIRTH
    /// declared (by alias, else by name): the datatype where the metric
    /// carries none, and a template's members'; empty when there is
    /// nothing to add.
    pub fn datatypes(&self, topic: &str, payload: &Payload) -> Vec<Option<Declared<'_>>> {
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
            let decl = m
                .alias
                .and_then(|a| declared.by_alias.get(&a))
                .or_else(|| m.name.as_ref().and_then(|n| declared.by_name.get(n)))?;
            // A metric that says its datatype needs only the members.
            if m.datatype.is_some() && decl.members.is_none() {
                return None;
            }
            Some(decl.as_declared())
        };
        let found: Vec<Option<Declared<'_>>> = payload.metrics.iter().map(lookup).collect();
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

    /// A DATA message naming `names` without their datatypes.
    fn data(names: &[&str]) -> Payload {
        Payload {
            metrics: names
                .iter()
                .map(|n| Metric {
                    name: Some((*n).to_owned()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn knows(births: &Births, topic: &str, name: &str) -> bool {
        let found = births.datatypes(topic, &data(&[name]));
        found.len() == 1 && found[0].is_some_and(|d| d.datatype == INT32)
    }

    /// BIRTHs with huge metric names fill the byte budget, not the
    /// instance's memory: past it the oldest BIRTHs are forgotten to make
    /// room for the new, and a node born again gives its bytes back.
    #[test]
    fn huge_names_stop_at_the_byte_budget_and_the_oldest_make_room() {
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
        // 15 of them fit in 32 MiB with their overheads: the last 15.
        assert_eq!(births.len(), 15);
        assert!(knows(&births, "spBv1.0/g/NDATA/e63", &huge));
        assert!(knows(&births, "spBv1.0/g/NDATA/e49", &huge));
        assert!(!knows(&births, "spBv1.0/g/NDATA/e48", &huge));
        assert!(!knows(&births, "spBv1.0/g/NDATA/e0", &huge));
        // Born again small: its 2 MiB are given back, and nothing else goes.
        births.learn("spBv1.0/g/NBIRTH/e50", &birth(&["small".to_owned()]));
        assert_eq!(births.len(), 15);
        assert!(births.bytes() < 14 * (2 << 20) + (1 << 20));
        assert!(knows(&births, "spBv1.0/g/NDATA/e50", "small"));
        assert!(knows(&births, "spBv1.0/g/NDATA/e49", &huge));
        // Room again: the next huge one is learned without forgetting any.
        births.learn("spBv1.0/g/NBIRTH/e64", &birth(&[huge]));
        assert_eq!(births.len(), 16);
        assert!(births.bytes() <= MAX_BYTES);
        assert!(knows(
            &births,
            "spBv1.0/g/NDATA/e49",
            "m".repeat(2 << 20).as_str()
        ));
    }

    /// A namespace that fills the table with devices that then go quiet
    /// does not keep the devices born after it from their signs: the
    /// oldest BIRTH makes room, a device born again is the newest.
    #[test]
    fn a_full_table_forgets_the_oldest_birth_for_a_new_one() {
        let mut births = Births::default();
        let names: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        let devices = MAX_DECLARED / names.len();
        for d in 0..devices {
            births.learn(&format!("spBv1.0/g/DBIRTH/e/d{d}"), &birth(&names));
        }
        // Room for its last datatype cost the last device the oldest BIRTH
        // (each datatype is checked against room for two, alias and name).
        let full = MAX_DECLARED - names.len();
        assert_eq!(births.len(), full);
        assert!(!knows(&births, "spBv1.0/g/DDATA/e/d0", "m9"));
        // d1 born again: now the newest, d2 the oldest.
        births.learn("spBv1.0/g/DBIRTH/e/d1", &birth(&names));
        assert_eq!(births.len(), full);
        births.learn("spBv1.0/g/DBIRTH/e/new", &birth(&names));
        assert_eq!(births.len(), full);
        assert!(knows(&births, "spBv1.0/g/DDATA/e/new", "m9"));
        assert!(knows(&births, "spBv1.0/g/DDATA/e/d1", "m9"));
        assert!(!knows(&births, "spBv1.0/g/DDATA/e/d2", "m9"));
        assert!(knows(&births, "spBv1.0/g/DDATA/e/d3", "m9"));
        // An NBIRTH of the node takes its devices out of the order too.
        births.learn("spBv1.0/g/NBIRTH/e", &birth(&names));
        assert_eq!(births.len(), names.len());
        assert!(knows(&births, "spBv1.0/g/NDATA/e", "m0"));
        assert!(!knows(&births, "spBv1.0/g/DDATA/e/new", "m0"));
        assert_eq!(births.born.len(), 1);
    }
}
