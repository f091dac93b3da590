//! NFS pools end to end: the real controller carves a real export into PVs, the real PV
//! binder binds claims to them. The export is served by nfs-ganesha in a network namespace
//! (the controller speaks NFSv3 to it, no kernel mount) or, for `access: Mounted`, is a plain
//! directory standing for the mount. Directories are always checked on the server's side: the
//! exported directory on this machine's disk. A directory operation the server refuses is
//! told once, in Events on the pool and the claim, as `kubectl describe` shows them.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::DeleteParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use volpool_api::VolumePool;
use volpool_e2e::controller::{
    Controller, LONG, apply_pool, class_and_namespace, create_claim, events_about, phase, pvs_of,
};
use volpool_e2e::deploy::kubectl_ok;
use volpool_e2e::nfs::{NfsServer, dirs_on_server, pv_dir};
use volpool_e2e::pool::wait_for_pool_condition;
use volpool_e2e::{unique, wait_for};
use volpool_testkit::TempDir;

fn available(pvs: &[PersistentVolume]) -> usize {
    pvs.iter().filter(|p| phase(p) == Some("Available")).count()
}

/// A pool of the test with `nfs` as its `spec.nfs`.
async fn create_nfs_pool(client: &Client, test: &str, nfs: Value) -> anyhow::Result<()> {
    let spec =
        json!({"storageClassName": test, "mountOptions": ["nfsvers=3", "nolock"], "nfs": nfs});
    apply_pool(client, test, test, spec).await
}

/// `spec.nfs` carving 1 MiB volumes out of `export` served by `server`, `min_available` of
/// them kept Available.
fn served(server: &NfsServer, export: &Path, min_available: u32) -> Value {
    json!({"server": server.address(), "path": export.to_string_lossy(),
           "volumeSize": "1Mi", "minAvailable": min_available})
}

/// The directory on the server of PV `name`.
async fn dir_of(client: &Client, name: &str) -> anyhow::Result<String> {
    Ok(pv_dir(
        &Api::<PersistentVolume>::all(client.clone())
            .get(name)
            .await?,
    ))
}

/// A claim on the pool's class, once Bound; returns the PV.
async fn claim(client: &Client, ns: &str, name: &str, class: &str) -> anyhow::Result<String> {
    create_claim(client, ns, name, class, "ReadWriteMany", "1Mi", None).await?;
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    wait_for(&format!("claim {ns}/{name} Bound"), LONG, || async {
        let pvc = api.get(name).await?;
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        Ok(bound
            .then(|| pvc.spec.as_ref().and_then(|s| s.volume_name.clone()))
            .flatten())
    })
    .await
}

/// Wait until the pool has `total` PVs, `avail` of them Available, and exactly their
/// directories on the server (plus `extra` directories without a PV).
async fn wait_for_pool(
    client: &Client,
    pool: &str,
    export: &Path,
    total: usize,
    avail: usize,
) -> anyhow::Result<Vec<PersistentVolume>> {
    wait_for(
        &format!(
            "{total} PVs ({avail} Available) and their directories in {}",
            export.display()
        ),
        LONG,
        || async {
            let pvs = pvs_of(client, pool).await?;
            let dirs: BTreeSet<String> = pvs.iter().map(pv_dir).collect();
            let ok = pvs.len() == total
                && available(&pvs) == avail
                && dirs_on_server(export, "pv-") == dirs;
            Ok(ok.then_some(pvs))
        },
    )
    .await
}

async fn wait_for_condition(
    client: &Client,
    pool: &str,
    type_: &str,
    status: &str,
) -> anyhow::Result<String> {
    let c = wait_for_pool_condition(client, pool, type_, status, LONG, |c| c.status == status);
    Ok(c.await?.message)
}

async fn delete_claim(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// The pool-upkeep story both access modes must pass: watermark, binding, maxVolumes,
/// Delete and Archive. `nfs` is the pool's `spec.nfs` reaching `export`.
async fn upkeep(test: &str, export: &Path, nfs: Value) -> anyhow::Result<()> {
    let client = class_and_namespace(test, false).await?;
    let mut spec = nfs;
    spec["volumeSize"] = json!("1Mi");
    spec["minAvailable"] = json!(3);
    spec["maxVolumes"] = json!(4);
    spec["onRelease"] = json!("Delete");
    create_nfs_pool(&client, test, spec.clone()).await?;
    let controller = Controller::start(test, &format!("{test}-a")).await?;

    let pvs = wait_for_pool(&client, test, export, 3, 3).await?;
    for dir in dirs_on_server(export, "pv-") {
        let mode = std::fs::metadata(export.join(&dir))?.permissions().mode();
        assert_eq!(mode & 0o7777, 0o777, "{dir} has mode {mode:o}");
    }
    let spec0 = pvs[0].spec.clone().unwrap_or_default();
    assert_eq!(
        spec0.access_modes,
        Some(
            ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!(spec0.storage_class_name.as_deref(), Some(test));
    wait_for("the export size metric", LONG, || async {
        let size = controller
            .metric(
                "volpool_pool_export_size_bytes",
                &[&format!("pool=\"{test}\"")],
            )
            .await?;
        Ok((size > 0.0).then_some(()))
    })
    .await?;

    // Idle: once the status counts the PVs, passes keep running (resync 1s), reading the
    // export, and write nothing.
    wait_for("the status to count 3 Available", LONG, || async {
        let pool = Api::<VolumePool>::all(client.clone()).get(test).await?;
        Ok((pool.status.map(|s| s.volumes.available) == Some(3)).then_some(()))
    })
    .await?;
    let written = controller.writes_during_passes(3.0).await?;
    assert_eq!(written, 0.0, "an idle pass wrote");
    assert_eq!(
        dirs_on_server(export, "pv-").len(),
        3,
        "an idle pass made a directory"
    );

    // A claim binds one: a 4th directory and PV keep 3 Available.
    let first = claim(&client, test, "one", test).await?;
    wait_for_pool(&client, test, export, 4, 3).await?;

    // maxVolumes 4: a second claim binds, no 5th PV, and the pool says why.
    let second = claim(&client, test, "two", test).await?;
    // NB: Degraded may already hold for another reason (no node reports a ready NFS client
    // here): wait for the message to name maxVolumes, not just for Degraded=True.
    let message = wait_for_pool_condition(
        &client,
        test,
        "Degraded",
        "True naming maxVolumes",
        LONG,
        |c| c.status == "True" && c.message.contains("maxVolumes"),
    )
    .await
    .map(|c| c.message);
    let pvs = wait_for_pool(&client, test, export, 4, 2).await?;
    assert!(
        message
            .as_deref()
            .is_ok_and(|m| m.contains("maxVolumes is 4")),
        "{message:?}"
    );
    assert_eq!(pvs.len(), 4, "never more than maxVolumes");

    // Delete: the directory and what the workload wrote go from the server, the PV goes, the
    // pool is topped up.
    let first_dir = dir_of(&client, &first).await?;
    std::fs::create_dir_all(export.join(&first_dir).join("data/deep"))?;
    std::fs::write(
        export.join(&first_dir).join("data/deep/file"),
        b"tenant data",
    )?;
    delete_claim(&client, test, "one").await?;
    wait_for(&format!("PV {first} deleted"), LONG, || async {
        Ok(Api::<PersistentVolume>::all(client.clone())
            .get_opt(&first)
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    assert!(
        !export.join(&first_dir).exists(),
        "{first_dir} is gone from the server"
    );
    wait_for_pool(&client, test, export, 4, 3).await?;

    // Archive: the directory is renamed, its contents kept.
    spec["onRelease"] = json!("Archive");
    create_nfs_pool(&client, test, spec).await?;
    let second_dir = dir_of(&client, &second).await?;
    std::fs::write(export.join(&second_dir).join("kept"), b"archived data")?;
    delete_claim(&client, test, "two").await?;
    let archived = wait_for("the archived directory", LONG, || async {
        let found = dirs_on_server(export, &format!("archived-{second_dir}-"));
        Ok(found.into_iter().next())
    })
    .await?;
    assert!(archived.ends_with('Z'), "a UTC timestamp: {archived}");
    assert_eq!(
        std::fs::read(export.join(&archived).join("kept"))?,
        b"archived data"
    );
    assert!(!export.join(&second_dir).exists());
    // Nothing is bound any more: 3 Available PVs are the watermark.
    wait_for_pool(&client, test, export, 3, 3).await?;
    drop(controller);
    Ok(())
}

/// A tmpfs of its own on an export directory, so the export's free space (written into the
/// pool's status) moves only with what this test does, not with the rest of the test run
/// filling the shared temp directory. Unmounted on drop.
struct OwnFilesystem<'a>(&'a Path);

impl<'a> OwnFilesystem<'a> {
    fn mount(dir: &'a Path) -> anyhow::Result<OwnFilesystem<'a>> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4g", "tmpfs"])
            .arg(dir)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "mount -t tmpfs on {} failed",
            dir.display()
        );
        Ok(OwnFilesystem(dir))
    }
}

impl Drop for OwnFilesystem<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0)
            .status();
    }
}

#[tokio::test]
async fn nfsv3_pool_upkeep_binding_max_volumes_delete_and_archive() -> anyhow::Result<()> {
    let test = unique("nfs-v3");
    let dir = TempDir::new(&format!("volpool-{test}"))?;
    let _own = OwnFilesystem::mount(&dir.0)?;
    let server = NfsServer::start(&[&dir.0])?;
    let nfs = json!({"server": server.address(), "path": dir.0.to_string_lossy()});
    upkeep(&test, &dir.0, nfs).await
}

#[tokio::test]
async fn mounted_pool_upkeep_binding_max_volumes_delete_and_archive() -> anyhow::Result<()> {
    let test = unique("nfs-mounted");
    let dir = TempDir::new(&format!("volpool-{test}"))?;
    let _own = OwnFilesystem::mount(&dir.0)?;
    let nfs = json!({"server": "nfs.example.com", "path": "/export", "access": "Mounted",
                     "mountedPath": dir.0.to_string_lossy()});
    upkeep(&test, &dir.0, nfs).await
}

#[tokio::test]
async fn a_crash_between_mkdir_and_the_pv_create_leaves_a_directory_that_is_adopted()
-> anyhow::Result<()> {
    let test = unique("nfs-crash");
    let dir = TempDir::new(&format!("volpool-{test}"))?;
    let server = NfsServer::start(&[&dir.0])?;
    let client = class_and_namespace(&test, false).await?;
    create_nfs_pool(&client, &test, served(&server, &dir.0, 1)).await?;
    let mut crashing = Controller::start_with_env(
        &test,
        &format!("{test}-crash"),
        &[("VOLPOOL_TEST_CRASH_AFTER_MKDIR", "1")],
    )
    .await?;
    let deadline = std::time::Instant::now() + LONG;
    while !crashing.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the controller did not abort after MKDIR within {LONG:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let made = dirs_on_server(&dir.0, "pv-");
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(
        pvs_of(&client, &test).await?.is_empty(),
        "the crash came before the PV"
    );

    let _controller = Controller::start(&test, &format!("{test}-b")).await?;
    let pvs = wait_for_pool(&client, &test, &dir.0, 1, 1).await?;
    assert_eq!(
        BTreeSet::from([pv_dir(&pvs[0])]),
        made,
        "the leftover directory is adopted: no leak, no duplicate"
    );
    Ok(())
}

#[tokio::test]
async fn a_stopped_server_holds_upkeep_without_deleting_then_it_resumes() -> anyhow::Result<()> {
    let test = unique("nfs-down");
    let dir = TempDir::new(&format!("volpool-{test}"))?;
    let server = NfsServer::start(&[&dir.0])?;
    let client = class_and_namespace(&test, false).await?;
    create_nfs_pool(&client, &test, served(&server, &dir.0, 2)).await?;
    let _controller = Controller::start(&test, &format!("{test}-a")).await?;
    let before = wait_for_pool(&client, &test, &dir.0, 2, 2).await?;
    wait_for_condition(&client, &test, "ExportUnreachable", "False").await?;

    server.stop()?;
    let message = wait_for_condition(&client, &test, "ExportUnreachable", "True").await?;
    assert!(message.contains(server.address()), "{message}");
    // A claim binds meanwhile: the pool wants a new PV but must not make one blind, and
    // deletes none.
    claim(&client, &test, "meanwhile", &test).await?;
    let pvs = pvs_of(&client, &test).await?;
    let names = |pvs: &[PersistentVolume]| -> BTreeSet<String> {
        pvs.iter().filter_map(|p| p.metadata.name.clone()).collect()
    };
    assert_eq!(
        names(&pvs),
        names(&before),
        "no PV created or deleted while unreachable"
    );

    server.restart()?;
    wait_for_condition(&client, &test, "ExportUnreachable", "False").await?;
    wait_for_pool(&client, &test, &dir.0, 3, 2).await?;
    Ok(())
}

/// A root-squashing server whose export's root (mode 0755) only root may write to, and the
/// test's class, namespace, pool over it (`min_available` volumes) and controller.
async fn root_squashed(
    prefix: &str,
    min_available: u32,
) -> anyhow::Result<(String, TempDir, NfsServer, Client, Controller)> {
    let test = unique(prefix);
    let dir = TempDir::new(&format!("volpool-{test}"))?;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755))?;
    let server = NfsServer::start(&[&dir.0])?;
    server.squash_root()?;
    let client = class_and_namespace(&test, false).await?;
    create_nfs_pool(&client, &test, served(&server, &dir.0, min_available)).await?;
    let controller = Controller::start(&test, &format!("{test}-a")).await?;
    Ok((test, dir, server, client, controller))
}

#[tokio::test]
async fn a_root_squashing_server_is_reported_with_the_fix() -> anyhow::Result<()> {
    let (test, dir, _server, client, _controller) = root_squashed("nfs-squash", 1).await?;
    let message = wait_for_condition(&client, &test, "RootSquashed", "True").await?;
    assert!(
        message.contains("no_root_squash") && message.contains("Squash = No_Root_Squash"),
        "{message}"
    );
    assert!(
        pvs_of(&client, &test).await?.is_empty(),
        "no PV without its directory"
    );
    assert!(dirs_on_server(&dir.0, "pv-").is_empty());
    Ok(())
}

/// `kubectl describe <kind> <name>` (with `-n <ns>` when given), as a user would run it.
fn describe(kind: &str, name: &str, ns: Option<&str>) -> anyhow::Result<String> {
    let mut args = vec!["describe", kind, name];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    kubectl_ok(&args)
}

#[tokio::test]
async fn a_refused_mkdir_is_told_once_on_the_pool_and_the_claim_with_the_fix() -> anyhow::Result<()>
{
    // Root is squashed to nobody, who may not write into the export's root: every MKDIR is
    // refused (NFS3ERR_ACCES). NB: minAvailable 0, so the only directory asked for is the
    // claim's.
    let (test, dir, server, client, controller) = root_squashed("nfs-refused", 0).await?;
    create_claim(&client, &test, "data", &test, "ReadWriteMany", "1Mi", None).await?;

    let export = format!("{}:{}/pv-", server.address(), dir.0.display());
    let says_it_all = |text: &str| {
        text.contains("MakeDirectoryFailed")
            && text.contains(&format!("could not make directory {export}"))
            && text.contains("NFS3ERR_ACCES")
            && text.contains("no_root_squash")
    };
    // What `kubectl describe` shows, on the pool and on the claim.
    let pool = wait_for("the Event in kubectl describe volumepool", LONG, || async {
        let text = describe("volumepool", &test, None)?;
        Ok(says_it_all(&text).then_some(text))
    })
    .await?;
    assert!(pool.contains("Warning"), "{pool}");
    wait_for("the Event in kubectl describe pvc", LONG, || async {
        let text = describe("pvc", "data", Some(&test))?;
        Ok(says_it_all(&text).then_some(()))
    })
    .await?;

    // The controller keeps retrying (each pass another MKDIR, refused the same way), and says
    // it once: one Event on the pool, one on the claim.
    controller.writes_during_passes(5.0).await?;
    let reason = "MakeDirectoryFailed";
    assert_eq!(
        events_about(&client, "kube-system", &test, reason)
            .await?
            .len(),
        1
    );
    assert_eq!(events_about(&client, &test, "data", reason).await?.len(), 1);
    assert!(dirs_on_server(&dir.0, "pv-").is_empty());
    assert!(pvs_of(&client, &test).await?.is_empty());
    Ok(())
}
