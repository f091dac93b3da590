//! Claims of the classes volpool serves, as the plan sees them: which are Pending, what they
//! ask, whether a PV fits, and why none does. A Pending claim volpool cannot serve is told so
//! by a `NoMatchingVolume` Event that names the fix, once per reason, again at most every
//! [`EXPLAIN_EVERY`] while it holds.
//!
//! ```text
//!  PVC ──► Claim {size, access modes, volume mode, selector} ──► fits(PV offer)?
//!  [Stuck {claim, key, message}] + World.explained ──► explain ──► Event on the claim
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use volpool_api::units::parse_bytes;
use volpool_api::{AccessMode, ClaimCounts, LABEL_POOL, selector_matches};

use super::change::{Change, Plan};
use super::events::Notice;
use super::pv::{access_mode_from, access_mode_name, claim_reference};
use super::world::{LocalPvs, World};

/// Provisioner of the StorageClasses whose claims only pre-made PVs serve.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Reason of the Event on a Pending claim that volpool cannot serve.
pub const NO_MATCHING_VOLUME: &str = "NoMatchingVolume";
/// A claim is told the same reason again at most this often.
pub const EXPLAIN_EVERY: Duration = Duration::from_secs(300);

/// What a claim asks for.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    /// The claim.
    pub pvc: &'a PersistentVolumeClaim,
    /// Its UID.
    pub uid: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// `spec.resources.requests.storage` in bytes (0 when absent or unreadable).
    pub request: u64,
    /// The same, as written.
    pub request_text: String,
    /// `spec.accessModes` (unknown ones skipped).
    pub modes: Vec<AccessMode>,
    /// `spec.volumeMode: Block`.
    pub block: bool,
    /// `spec.selector`.
    pub selector: Option<&'a LabelSelector>,
}

impl<'a> Claim<'a> {
    /// Read a claim; `None` without a name, namespace or UID.
    pub fn read(pvc: &'a PersistentVolumeClaim) -> Option<Claim<'a>> {
        let spec = pvc.spec.as_ref();
        let request_text = spec
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        Some(Claim {
            pvc,
            uid: pvc.metadata.uid.as_deref()?,
            name: pvc.metadata.name.as_deref()?,
            namespace: pvc.metadata.namespace.as_deref()?,
            request: parse_bytes(&request_text).unwrap_or_default(),
            request_text,
            modes: spec
                .and_then(|s| s.access_modes.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|m| access_mode_from(m))
                .collect(),
            block: spec.and_then(|s| s.volume_mode.as_deref()) == Some("Block"),
            selector: spec.and_then(|s| s.selector.as_ref()),
        })
    }

    /// The claim's StorageClass.
    pub fn class(&self) -> &'a str {
        self.pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .unwrap_or_default()
    }

    /// The PV the claim is bound (or being bound) to.
    pub fn volume_name(&self) -> Option<&'a str> {
        let spec = self.pvc.spec.as_ref()?;
        spec.volume_name.as_deref().filter(|v| !v.is_empty())
    }

    /// Waiting for a volume: phase Pending (or none yet), no volume named, not being deleted.
    pub fn is_pending(&self) -> bool {
        let phase = self.pvc.status.as_ref().and_then(|s| s.phase.as_deref());
        matches!(phase, None | Some("Pending"))
            && self.volume_name().is_none()
            && self.pvc.metadata.deletion_timestamp.is_none()
    }

    /// Bound to a PV.
    pub fn is_bound(&self) -> bool {
        self.pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    }

    /// A reference to the claim, for Events and a PV's `claimRef`.
    pub fn reference(&self) -> ObjectReference {
        claim_reference(self.namespace, self.name, self.uid)
    }

    /// The modes the claim asks that `offered` lacks.
    pub fn missing_modes(&self, offered: &[AccessMode]) -> Vec<AccessMode> {
        self.modes
            .iter()
            .filter(|m| !offered.contains(m))
            .copied()
            .collect()
    }

    /// Whether a PV labelled `labels` satisfies the claim's selector (no selector: any does).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.is_none_or(|s| selector_matches(s, labels))
    }

    /// Whether a PV with this capacity, access modes, volume mode and labels fits the claim.
    pub fn fits(&self, offer: &Offer) -> bool {
        offer.capacity >= self.request
            && offer.block == self.block
            && self.missing_modes(&offer.modes).is_empty()
            && self.selects(&offer.labels)
    }
}

/// An Available PV as a claim sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// PV name.
    pub name: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Access modes.
    pub modes: Vec<AccessMode>,
    /// `volumeMode: Block`.
    pub block: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The node it is on (local PVs).
    pub node: Option<String>,
}

/// The claims of a class, Pending ones oldest first.
pub fn pending<'a>(claims: &'a [Arc<PersistentVolumeClaim>], class: &str) -> Vec<Claim<'a>> {
    let mut pending: Vec<Claim> = claims
        .iter()
        .filter_map(|c| Claim::read(c))
        .filter(|c| c.class() == class && c.is_pending())
        .collect();
    pending.sort_by(|a, b| {
        let created = |c: &Claim| c.pvc.metadata.creation_timestamp.clone().map(|t| t.0);
        (created(a), a.namespace, a.name).cmp(&(created(b), b.namespace, b.name))
    });
    pending
}

/// Pending and Bound claims of a class.
pub fn counts(claims: &[Arc<PersistentVolumeClaim>], class: &str) -> ClaimCounts {
    let mut counts = ClaimCounts::default();
    for claim in claims.iter().filter_map(|c| Claim::read(c)) {
        if claim.class() != class {
            continue;
        }
        if claim.is_pending() {
            counts.pending += 1;
        } else if claim.is_bound() {
            counts.bound += 1;
        }
    }
    counts
}

/// Why a Pending claim gets no volume, and what would fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stuck {
    /// The claim.
    pub claim: ObjectReference,
    /// Which kind of reason (a claim is told each kind once per [`EXPLAIN_EVERY`]).
    pub key: &'static str,
    /// What is wrong and what would fix it.
    pub message: String,
}

impl Stuck {
    /// A reason for `claim`.
    pub fn new(claim: &Claim, key: &'static str, message: String) -> Stuck {
        Stuck {
            claim: claim.reference(),
            key,
            message,
        }
    }

    /// The claim asks access modes the pool does not offer.
    pub fn access_modes(claim: &Claim, pool: &str, offered: &[AccessMode]) -> Option<Stuck> {
        let missing = claim.missing_modes(offered);
        (!missing.is_empty()).then(|| {
            let asks: Vec<&str> = missing.iter().map(|m| access_mode_name(*m)).collect();
            Stuck::new(
                claim,
                "AccessModes",
                format!(
                    "pool {pool} offers {}; the claim asks {}: add it to spec.accessModes",
                    modes_text(offered),
                    asks.join(", ")
                ),
            )
        })
    }

    /// The claim's selector matches none of the labels the pool's PVs carry.
    pub fn selector(claim: &Claim, pool: &str, labels: &BTreeMap<String, String>) -> Option<Stuck> {
        (!claim.selects(labels)).then(|| {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Stuck::new(
                claim,
                "Selector",
                format!(
                    "the claim's selector matches no PV of pool {pool} (labelled {}): change the selector, or add the labels to the pool's spec.labels",
                    labels.join(",")
                ),
            )
        })
    }

    /// None of the pool's Available PVs is large enough.
    pub fn too_small(claim: &Claim, pool: &str, offers: &[Offer]) -> Stuck {
        let largest = offers.iter().max_by_key(|o| o.capacity);
        let have = match (offers.len(), largest) {
            (0, _) | (_, None) => "has no Available PV".to_string(),
            (n, Some(l)) => {
                let node = l
                    .node
                    .as_ref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default();
                format!(
                    "has {n} Available PVs; the largest is {}{node}",
                    bytes_text(l.capacity)
                )
            }
        };
        Stuck::new(
            claim,
            "Capacity",
            format!("pool {pool} {have}; the claim asks {}", claim.request_text),
        )
    }
}

/// Claims of classes with provisioner `kubernetes.io/no-provisioner` that no pool serves.
pub fn unserved(world: &World) -> Vec<Stuck> {
    let Some(classes) = &world.storage_classes else {
        return Vec::new();
    };
    let mut stuck = Vec::new();
    for (class, info) in classes {
        if info.provisioner != NO_PROVISIONER || world.served_classes.contains(class) {
            continue;
        }
        for claim in pending(&world.claims, class) {
            if info.wait_for_consumer && !in_use(world, &claim) {
                continue;
            }
            stuck.push(Stuck::new(
                &claim,
                "NoPool",
                format!(
                    "no VolumePool serves class {class} (provisioner {NO_PROVISIONER}): create one, or use a class volpool serves"
                ),
            ));
        }
    }
    stuck
}

/// Whether a Pending pod uses the claim.
pub fn in_use(world: &World, claim: &Claim) -> bool {
    world
        .claims_in_use
        .contains(&(claim.namespace.to_string(), claim.name.to_string()))
}

/// The Events for `stuck`, but for the reasons a claim was told less than [`EXPLAIN_EVERY`]
/// ago; the told ones are remembered in `plan.explained`.
pub fn explain(world: &World, stuck: Vec<Stuck>, plan: &mut Plan) {
    for s in stuck {
        let uid = s.claim.uid.clone().unwrap_or_default();
        let key = (uid, s.key.to_string());
        let recent = world.explained.get(&key).is_some_and(|at| {
            Duration::try_from(world.now.duration_since(*at)).is_ok_and(|d| d < EXPLAIN_EVERY)
        });
        if recent || plan.explained.contains(&key) {
            continue;
        }
        plan.explained.push(key);
        plan.changes.push(Change::Event(Notice {
            regarding: s.claim,
            warning: true,
            reason: NO_MATCHING_VOLUME.into(),
            action: "Bind".into(),
            note: s.message,
        }));
    }
}

/// `[ReadWriteOnce, ReadWriteMany]`.
pub fn modes_text(modes: &[AccessMode]) -> String {
    let names: Vec<&str> = modes.iter().map(|m| access_mode_name(*m)).collect();
    format!("[{}]", names.join(", "))
}

/// Bytes as a person writes them: `5Gi`, `1945Mi`, else the number of bytes.
pub fn bytes_text(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes > 0 && bytes.is_multiple_of(GIB) {
        format!("{}Gi", bytes / GIB)
    } else if bytes > 0 && bytes.is_multiple_of(MIB) {
        format!("{}Mi", bytes / MIB)
    } else {
        bytes.to_string()
    }
}

/// Claims seen so far, to time each from its creation to Bound (`volpool_claim_bind_seconds`).
#[derive(Default)]
pub struct Binding {
    /// Whether each claim (UID) was Bound when last seen; `None` before the first look.
    seen: Option<HashMap<String, bool>>,
}

impl Binding {
    /// (pool, seconds from creation to Bound) of each claim Bound now and not when last seen
    /// (claims already Bound when the controller started are not timed).
    pub fn observe(&mut self, world: &World, pvs: &dyn LocalPvs) -> Vec<(String, f64)> {
        let first = self.seen.is_none();
        let before = self.seen.take().unwrap_or_default();
        let mut seen = HashMap::new();
        let mut bound = Vec::new();
        for claim in world.claims.iter().filter_map(|c| Claim::read(c)) {
            let now_bound = claim.is_bound();
            seen.insert(claim.uid.to_string(), now_bound);
            if first || !now_bound || before.get(claim.uid) == Some(&true) {
                continue;
            }
            let Some(created) = claim.pvc.metadata.creation_timestamp.as_ref() else {
                continue;
            };
            let seconds = world.now.duration_since(created.0).as_secs_f64().max(0.0);
            bound.push((pool_of(world, pvs, &claim), seconds));
        }
        self.seen = Some(seen);
        bound
    }
}

/// The pool a claim's PV belongs to, else the first pool of its class.
fn pool_of(world: &World, pvs: &dyn LocalPvs, claim: &Claim) -> String {
    let by_pv = claim.volume_name().and_then(|v| {
        let pv = pvs.get(v)?;
        pv.metadata.labels.as_ref()?.get(LABEL_POOL).cloned()
    });
    by_pv
        .or_else(|| {
            world
                .pools
                .iter()
                .find(|p| p.spec.storage_class_name == claim.class())
                .and_then(|p| p.metadata.name.clone())
        })
        .unwrap_or_default()
}
