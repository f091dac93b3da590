//! Unit tests of the NFS checks on fixture host trees (`testdata/nfs/hosts/`), of the install
//! plan on os-release fixtures (`testdata/nfs/os-release/`), and of the probes' pure parts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use volpool_api::{Check, CheckStatus, VolumePool};

use super::checks::{self, dpkg_status, ini_value};
use super::install::{command, plan_for};
use super::osrelease::{self, Step, parse, plan};
use super::rpc::{covers, exported_to};
use super::{NfsPool, file_checks, kernel, ready, select};
use crate::host::RealHost;

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/nfs")
        .join(path)
}

fn host(tree: &str) -> RealHost {
    RealHost::new(testdata(&format!("hosts/{tree}")))
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

#[test]
fn a_bare_debian_host_lacks_the_helper_the_package_and_the_kernel_client() {
    let checks = file_checks(&host("debian-bare"));
    let helper = find(&checks, checks::MOUNT_HELPER);
    assert_eq!(helper.status, CheckStatus::NonOK);
    assert!(helper.message.contains("mount.nfs") && helper.message.contains("nfs-common"));
    let package = find(&checks, checks::PACKAGE);
    assert_eq!(package.status, CheckStatus::NonOK);
    assert!(
        package.message.contains("nfs-common is not installed"),
        "{package:?}"
    );
    let kernel = find(&checks, checks::KERNEL);
    assert_eq!(kernel.status, CheckStatus::NonOK);
    for missing in [
        "nfs is not in /proc/filesystems",
        "/sys/module/nfs does not exist",
        "CONFIG_NFS_FS is not set in /proc/config.gz",
    ] {
        assert!(kernel.message.contains(missing), "{missing}: {kernel:?}");
    }
    assert!(!ready(&checks));
}

#[test]
fn a_ready_debian_host_passes_every_check() {
    let checks = file_checks(&host("debian-ready"));
    for c in &checks {
        assert_eq!(c.status, CheckStatus::OK, "{c:?}");
    }
    assert!(
        find(&checks, checks::MOUNT_HELPER)
            .message
            .contains("/usr/sbin/mount.nfs")
    );
    assert!(
        find(&checks, checks::PACKAGE)
            .message
            .contains("nfs-common 1:2.6.2")
    );
    assert!(find(&checks, checks::KERNEL).message.contains("nfs, nfs4"));
    assert!(
        find(&checks, checks::NFS_VERSION)
            .message
            .contains("Defaultvers=4.2")
    );
    assert!(
        find(&checks, checks::IDMAP_DOMAIN)
            .message
            .contains("cluster.example.com")
    );
    assert!(ready(&checks));
}

#[test]
fn a_loadable_module_is_ok_and_a_configured_but_absent_one_is_not() {
    let available = kernel::kernel(&host("module-available"));
    assert_eq!(available.status, CheckStatus::OK, "{available:?}");
    assert!(
        available.message.contains("kernel/fs/nfs/nfs.ko.xz"),
        "{available:?}"
    );
    let missing = kernel::kernel(&host("module-missing"));
    assert_eq!(missing.status, CheckStatus::NonOK, "{missing:?}");
    assert!(
        missing.message.contains(
            "CONFIG_NFS_FS=m in /boot/config-6.5.0-1014-gcp but the module is not installed"
        ),
        "{missing:?}"
    );
}

#[test]
fn this_machines_kernel_has_no_nfs_and_the_check_names_what_is_missing() {
    let check = kernel::kernel(&RealHost::new("/"));
    assert_eq!(check.status, CheckStatus::NonOK, "{check:?}");
    assert!(
        check.message.contains("nfs is not in /proc/filesystems"),
        "{check:?}"
    );
    assert!(
        check.message.contains("/sys/module/nfs does not exist"),
        "{check:?}"
    );
}

#[test]
fn package_databases_of_each_family_are_read_as_files() {
    let status = |tree: &str| checks::package(&host(tree));
    assert_eq!(status("alpine").status, CheckStatus::OK);
    assert!(status("arch").message.contains("nfs-utils-2.6.4-1"));
    assert_eq!(status("rocky").status, CheckStatus::OK);
    // NB: nfs-utils-coreos and libnfsidmap are other packages.
    assert_eq!(status("rocky-bare").status, CheckStatus::NonOK);
    let half = status("half-installed");
    assert_eq!(half.status, CheckStatus::NonOK);
    assert!(
        half.message.contains("deinstall ok config-files"),
        "{half:?}"
    );
    assert_eq!(status("silverblue").status, CheckStatus::Unknown);
}

#[test]
fn a_default_version_that_is_not_a_version_is_reported() {
    let check = checks::nfs_version(&host("half-installed"));
    assert_eq!(check.status, CheckStatus::NonOK);
    assert!(check.message.contains("Defaultvers=5"), "{check:?}");
}

#[test]
fn dpkg_and_ini_parsers() {
    let status = "Package: nfs-common\nStatus: install ok installed\nVersion: 1:2.6.2\n\nPackage: nfs-common-doc\nStatus: install ok installed\n";
    assert_eq!(
        dpkg_status(status, "nfs-common"),
        Some(("install ok installed".into(), "1:2.6.2".into()))
    );
    assert_eq!(dpkg_status(status, "nfs"), None);
    let conf = "[General]\n# Domain = commented\nDomain = a.example ; trailing\n[Mapping]\nDomain = other\n";
    assert_eq!(
        ini_value(conf, "general", "domain").as_deref(),
        Some("a.example")
    );
    assert_eq!(ini_value(conf, "Missing", "Domain"), None);
}

#[test]
fn a_pacman_package_whose_name_starts_with_nfs_utils_and_a_digit_is_another_package() {
    // NB: the name was taken as all before "nfs-utils-<digit>", so nfs-utils-2fa counted.
    let entries = [
        "nfs-utils-2fa-1.0-1".to_string(),
        "bash-5.2.026-2".to_string(),
    ];
    assert_eq!(checks::pacman_entry(&entries, "nfs-utils"), None);
    let entries = ["nfs-utils-2.6.4-1".to_string()];
    assert_eq!(
        checks::pacman_entry(&entries, "nfs-utils").map(String::as_str),
        Some("nfs-utils-2.6.4-1")
    );
}

#[test]
fn a_real_rpm_database_lists_its_packages_by_name() {
    let db = std::fs::read(testdata("hosts/rocky-bare/var/lib/rpm/rpmdb.sqlite")).expect("fixture");
    let mut names = super::rpmdb::package_names(&db, &[]).expect("fixture reads");
    names.sort();
    assert_eq!(names, ["bash", "libnfsidmap", "nfs-utils-coreos"]);
}

#[test]
fn a_quote_before_a_multibyte_character_is_not_a_panic() {
    // NB: unquote cut the last byte of a quoted value, inside "é".
    assert_eq!(parse("PRETTY_NAME=\"é\n").pretty_name, "é");
    assert_eq!(parse("ID='ubuntu\n").id, "ubuntu");
}

fn os(name: &str) -> osrelease::OsRelease {
    let text = std::fs::read_to_string(testdata(&format!("os-release/{name}"))).expect("fixture");
    parse(&text)
}

fn argv(steps: &[Step]) -> Vec<String> {
    steps.iter().map(Step::display).collect()
}

#[test]
fn each_family_gets_its_package_manager() {
    let none = |_: &str| false;
    let dnf = |p: &str| p == "dnf";
    let apt = [
        "apt-get -o DPkg::Lock::Timeout=60 update",
        "apt-get install -y -o DPkg::Lock::Timeout=60 nfs-common",
    ];
    for name in [
        "debian-12",
        "debian-12-this-machine",
        "ubuntu-22.04",
        "linuxmint-21",
    ] {
        let steps = plan(&os(name), &none).expect(name);
        assert_eq!(argv(&steps), apt, "{name}");
        assert!(
            steps
                .iter()
                .all(|s| s.env == [("DEBIAN_FRONTEND".into(), "noninteractive".into())])
        );
    }
    assert_eq!(
        argv(&plan(&os("rhel-9"), &dnf).expect("rhel")),
        ["dnf install -y nfs-utils"]
    );
    assert_eq!(
        argv(&plan(&os("rocky-9"), &dnf).expect("rocky")),
        ["dnf install -y nfs-utils"]
    );
    assert_eq!(
        argv(&plan(&os("amzn-2"), &none).expect("amzn")),
        ["yum install -y nfs-utils"]
    );
    assert_eq!(
        argv(&plan(&os("fedora-39"), &dnf).expect("fedora")),
        ["dnf install -y nfs-utils"]
    );
    for name in ["opensuse-leap-15.5", "sles-15"] {
        assert_eq!(
            argv(&plan(&os(name), &none).expect(name)),
            ["zypper --non-interactive install nfs-client"]
        );
    }
    assert_eq!(
        argv(&plan(&os("alpine-3.19"), &none).expect("alpine")),
        ["apk add nfs-utils"]
    );
    assert_eq!(
        argv(&plan(&os("arch"), &none).expect("arch")),
        ["pacman -S --noconfirm --needed nfs-utils"]
    );
}

#[test]
fn immutable_and_unknown_systems_are_refused_with_the_reason() {
    let none = |_: &str| false;
    for (name, reason) in [
        ("flatcar", "Flatcar Container Linux"),
        ("talos", "Talos Linux"),
        ("bottlerocket", "Bottlerocket"),
        ("fedora-coreos-39", "Fedora CoreOS"),
    ] {
        let why = plan(&os(name), &none).expect_err(name);
        assert!(
            why.contains("immutable system") && why.contains(reason),
            "{name}: {why}"
        );
    }
    let why = plan(&os("gentoo"), &none).expect_err("gentoo");
    assert!(
        why.contains("ID=gentoo") && why.contains("yourself"),
        "{why}"
    );
    // Values that look like shell are data: refused as an unknown distribution, never run.
    let hostile = os("hostile");
    assert_eq!(hostile.id, "debian; reboot");
    assert_eq!(hostile.pretty_name, "Evil \"Linux\"");
    assert!(plan(&hostile, &none).is_err());
}

#[test]
fn the_plan_reads_the_host_root() {
    let refused = plan_for(&host("silverblue")).expect_err("ostree");
    assert!(refused.to_string().contains("rpm-ostree"), "{refused}");
    let steps = plan_for(&host("rocky")).expect("rocky has dnf");
    assert_eq!(argv(&steps), ["dnf install -y nfs-utils"]);
    let err = plan_for(&host("half-installed")).expect_err("no os-release");
    assert!(err.to_string().contains("/etc/os-release"), "{err}");
}

#[test]
fn install_commands_are_chrooted_argv_with_a_clean_environment() {
    let steps = plan(&os("debian-12"), &|_| false).expect("debian");
    let cmd = command(Path::new("/host"), &steps[1]);
    assert_eq!(cmd.get_program(), "chroot");
    let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
    assert_eq!(
        args,
        [
            "/host",
            "apt-get",
            "install",
            "-y",
            "-o",
            "DPkg::Lock::Timeout=60",
            "nfs-common"
        ]
    );
    let envs: BTreeMap<_, _> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
        .collect();
    assert_eq!(envs["DEBIAN_FRONTEND"], "noninteractive");
    assert!(envs["PATH"].contains("/usr/sbin"));
    assert!(
        !envs.contains_key("HOME"),
        "the environment is cleared: {envs:?}"
    );
}

fn pools(yaml: &str) -> Vec<VolumePool> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("pool"))
        .collect()
}

#[test]
fn pools_select_by_node_and_mount_options_decide_the_probes() {
    let all = pools(
        "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: v3}\nspec: {storageClassName: a, mountOptions: ['nfsvers=3'], nfs: {server: s1, path: /e}}\n---\napiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: nolock}\nspec: {storageClassName: b, mountOptions: ['vers=3,nolock'], nodeSelector: {matchLabels: {nfs: 'yes'}}, nfs: {server: s2, path: /e}}\n---\napiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: v4}\nspec: {storageClassName: c, mountOptions: [nfsvers=4.1, hard], nfs: {server: s3, path: /e}}\n---\napiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: any}\nspec: {storageClassName: d, nfs: {server: s4, path: /e}}\n---\napiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {name: local}\nspec: {storageClassName: e, local: {discoveryDir: /mnt}}\n",
    );
    let by_name = |ps: &[NfsPool], n: &str| ps.iter().find(|p| p.name == n).cloned().expect(n);
    let every = select(&all, None);
    assert_eq!(every.len(), 4);
    let v3 = by_name(&every, "v3");
    assert!(v3.v3 && v3.locking);
    let nolock = by_name(&every, "nolock");
    assert!(nolock.v3 && !nolock.locking);
    let v4 = by_name(&every, "v4");
    assert!(!v4.v3 && !v4.locking);
    let any = by_name(&every, "any");
    assert!(any.v3 && !any.locking);
    let unlabelled = select(&all, Some(&BTreeMap::new()));
    assert!(unlabelled.iter().all(|p| p.name != "nolock"));
}

#[test]
fn export_lists_match_clients_and_paths() {
    let me: IpAddr = "10.1.2.3".parse().expect("ip");
    let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(exported_to(&[], me));
    assert!(exported_to(&groups(&["*"]), me));
    assert!(exported_to(&groups(&["10.1.0.0/16"]), me));
    assert!(exported_to(&groups(&["10.1.2.*"]), me));
    assert!(!exported_to(&groups(&["10.2.0.0/16", "10.1.2.4"]), me));
    assert!(covers("/srv/nfs", "/srv/nfs"));
    assert!(covers("/srv/nfs/", "/srv/nfs/pool-a"));
    assert!(!covers("/srv/nfs", "/srv/nfs-other"));
}

#[tokio::test]
async fn statd_check_without_rpcbind_is_non_ok_with_the_real_error() {
    // A port that was free a moment ago: nothing listens, the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    drop(listener);
    let check = super::rpc::statd(addr, Duration::from_secs(10)).await;
    assert_eq!(check.status, CheckStatus::NonOK, "{check:?}");
    assert!(
        check.message.contains("refused") && check.message.contains("nolock"),
        "{check:?}"
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_reported_as_such() {
    let pool = NfsPool {
        name: "p".into(),
        server: "no-such-server.invalid".into(),
        path: "/e".into(),
        v3: true,
        locking: false,
    };
    let result = super::rpc::probe_server(&pool, Duration::from_secs(10)).await;
    assert!(!result.reachable);
    assert!(
        result
            .message
            .starts_with("cannot resolve no-such-server.invalid"),
        "{result:?}"
    );
}

#[test]
fn only_one_install_runs_at_a_time() {
    let first = super::install::Running::claim().expect("first install");
    let second = super::install::Running::claim();
    assert!(matches!(second, Err(super::error::NfsError::InstallBusy)));
    drop(first);
    assert!(super::install::Running::claim().is_ok());
}
