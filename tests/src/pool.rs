//! A VolumePool's conditions as a user reads them (`kubectl get volumepool -o yaml`): one
//! condition by its type, now or once it is as a test wants it.
//!
//! ```text
//!  test ──► pool_condition / wait_for_pool_condition ──► VolumePool/<pool>.status.conditions
//! ```

use std::time::Duration;

use anyhow::anyhow;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Client};
use volpool_api::{VolumePool, VolumePoolStatus};

use crate::wait_for;

/// The condition of type `type_` in a pool's `status`.
pub fn condition_of<'a>(status: &'a VolumePoolStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// The condition of type `type_` of VolumePool `pool`, as its status has it now.
pub async fn pool_condition(
    client: &Client,
    pool: &str,
    type_: &str,
) -> anyhow::Result<Option<Condition>> {
    let pool = Api::<VolumePool>::all(client.clone()).get(pool).await?;
    Ok(pool
        .status
        .as_ref()
        .and_then(|s| condition_of(s, type_))
        .cloned())
}

/// The condition of type `type_` of VolumePool `pool`, once `wanted` holds for it; `what` says
/// what is waited for, and a timeout names the condition last seen.
pub async fn wait_for_pool_condition(
    client: &Client,
    pool: &str,
    type_: &str,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(&Condition) -> bool,
) -> anyhow::Result<Condition> {
    wait_for(
        &format!("pool {pool}: condition {type_} {what}"),
        timeout,
        || async {
            match pool_condition(client, pool, type_).await? {
                Some(c) if wanted(&c) => Ok(Some(c)),
                seen => Err(anyhow!("its {type_} condition: {seen:?}")),
            }
        },
    )
    .await
}
