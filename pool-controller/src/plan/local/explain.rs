//! Why a Pending claim of a local pool's class gets no PV, for the user to fix: the claim asks
//! an access mode or volume mode the pools do not offer, or more than their largest Available
//! PV. A class that binds only once a pod uses the claim (`WaitForFirstConsumer`, where the
//! scheduler picks the node) is explained only once a Pending pod uses it.
//!
//! ```text
//!  Pending claims of the class + Available PVs of its pools ─► fits? ─► none: Stuck (the fix)
//! ```

use std::collections::BTreeMap;

use volpool_api::{VolumeMode, VolumePool};

use super::pv::LocalPv;
use crate::plan::claims::{self, Offer, Stuck};
use crate::plan::pv::{Phase, phase};
use crate::plan::select::name_of;
use crate::plan::world::{LocalPvs, World};

/// The reasons of the Pending claims of the classes of `pools` (valid local pools). The pools'
/// PVs are read only for a class with Pending claims.
pub fn stuck_claims(world: &World, pvs: &dyn LocalPvs, pools: &[&VolumePool]) -> Vec<Stuck> {
    let mut by_class: BTreeMap<&str, Vec<&VolumePool>> = BTreeMap::new();
    for pool in pools {
        by_class
            .entry(pool.spec.storage_class_name.as_str())
            .or_default()
            .push(pool);
    }
    let mut stuck = Vec::new();
    for (class, pools) in by_class {
        let waits = world
            .storage_classes
            .as_ref()
            .and_then(|c| c.get(class))
            .is_some_and(|c| c.wait_for_consumer);
        let pending = claims::pending(&world.claims, class);
        if pending.is_empty() {
            continue;
        }
        let offers = offers(pvs, &pools);
        let names: Vec<&str> = pools.iter().map(|p| name_of(p)).collect();
        let name = names.join(", ");
        for claim in pending {
            if (waits && !claims::in_use(world, &claim)) || offers.iter().any(|o| claim.fits(o)) {
                continue;
            }
            let pool = pools[0];
            let block = pool.spec.local.as_ref().map(|l| l.volume_mode) == Some(VolumeMode::Block);
            let reason = Stuck::access_modes(&claim, &name, &pool.effective_access_modes())
                .or_else(|| {
                    (claim.block != block).then(|| {
                        let (has, asks) = if block {
                            ("Block", "Filesystem")
                        } else {
                            ("Filesystem", "Block")
                        };
                        let message = format!(
                            "pool {name} offers {has} volumes; the claim asks volumeMode {asks}"
                        );
                        Stuck::new(&claim, "VolumeMode", message)
                    })
                })
                .or_else(|| {
                    let selected = offers.iter().any(|o| claim.selects(&o.labels));
                    (!offers.is_empty() && !selected).then(|| {
                        let message = format!(
                            "the claim's selector matches none of the {} Available PVs of pool {name}: change the selector, or the pool's spec.labels",
                            offers.len()
                        );
                        Stuck::new(&claim, "Selector", message)
                    })
                })
                .unwrap_or_else(|| Stuck::too_small(&claim, &name, &offers));
            stuck.push(reason);
        }
    }
    stuck
}

/// The Available, healthy PVs of `pools`.
fn offers(pvs: &dyn LocalPvs, pools: &[&VolumePool]) -> Vec<Offer> {
    pools
        .iter()
        .flat_map(|p| pvs.of_pool(name_of(p)))
        .filter(|pv| phase(pv) == Phase::Available)
        .filter_map(|pv| {
            let local = LocalPv::from_pv(&pv, &[])?;
            local.health.is_none().then(|| Offer {
                name: local.name.clone(),
                capacity: local.capacity_bytes,
                modes: local.fields.access_modes.clone(),
                block: local.volume_mode == VolumeMode::Block,
                labels: pv.metadata.labels.clone().unwrap_or_default(),
                node: Some(local.node.clone()),
            })
        })
        .collect()
}
