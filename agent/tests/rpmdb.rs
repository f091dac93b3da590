//! `volpool-agent check-nfs` on a host root whose rpm database rpm itself wrote: packages
//! built with `rpmbuild` from specs made here, recorded with `rpm --root … --justdb -i`. Only a
//! package *named* nfs-utils (or nfs-client) counts: not `libnfs-utils`, not
//! `nfs-utils-extra`, not one that merely requires nfs-utils.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use volpool_testkit::{TempDir, run};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");
/// Where rpm-based distributions keep the database (Debian's rpm defaults to ~/.rpmdb).
const DBPATH: &str = "/var/lib/rpm";

/// `rpm` and `rpmbuild`, or a failure that says how to get them.
fn tool(name: &str) -> &str {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: tests/setup-agent-deps installs it (Debian packages rpm, python3)"
    );
    name
}

/// A directory of built packages and a host root with an empty rpm database.
struct RpmHost {
    dir: TempDir,
}

impl RpmHost {
    fn new() -> RpmHost {
        let dir = TempDir::new("volpool-rpmdb").expect("temp dir");
        let host = RpmHost { dir };
        run(host.rpm().arg("--initdb")).expect("rpm --initdb");
        host
    }

    fn root(&self) -> PathBuf {
        self.dir.0.join("root")
    }

    fn rpm(&self) -> Command {
        let mut cmd = Command::new(tool("rpm"));
        cmd.arg("--root")
            .arg(self.root())
            .args(["--dbpath", DBPATH]);
        cmd
    }

    /// Build a noarch package `name` with the given `Requires:` and `extra_provides`
    /// `Provides:` lines (hundreds make a header bigger than one SQLite page).
    fn build(&self, name: &str, requires: &[&str], extra_provides: usize) -> PathBuf {
        let mut spec = format!(
            "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: {name}, a volpool test package\nLicense: Apache-2.0\nBuildArch: noarch\n"
        );
        for r in requires {
            spec.push_str(&format!("Requires: {r}\n"));
        }
        for i in 0..extra_provides {
            spec.push_str(&format!("Provides: {name}-capability-{i} = 1.0\n"));
        }
        spec.push_str("%description\nA package for volpool's rpm database test.\n%files\n");
        let specfile = self.dir.0.join(format!("{name}.spec"));
        std::fs::write(&specfile, spec).expect("write spec");
        let topdir = self.dir.0.join("build");
        run(Command::new(tool("rpmbuild"))
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", topdir.display()))
            .arg(&specfile))
        .expect("rpmbuild");
        topdir.join(format!("RPMS/noarch/{name}-1.0-1.noarch.rpm"))
    }

    fn install(&self, packages: &[&Path]) {
        run(self
            .rpm()
            .args(["--justdb", "--nodeps", "-i"])
            .args(packages))
        .expect("rpm -i");
    }

    fn erase(&self, name: &str) {
        run(self.rpm().args(["--justdb", "--nodeps", "-e", name])).expect("rpm -e");
    }

    /// The `package` check's status and message.
    fn package_check(&self) -> (String, String) {
        let out = Command::new(AGENT)
            .args(["check-nfs", "-o", "json", "--host-root"])
            .arg(self.root())
            .output()
            .expect("run check-nfs");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check-nfs printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let check = report["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "package"))
            .unwrap_or_else(|| panic!("no package check in {report:#}"));
        (
            check["status"].as_str().unwrap_or_default().to_string(),
            check["message"].as_str().unwrap_or_default().to_string(),
        )
    }
}

#[test]
fn only_a_package_named_nfs_utils_counts_in_an_sqlite_rpm_database() {
    let host = RpmHost::new();
    let lookalikes = [
        host.build("libnfs-utils", &[], 0),
        host.build("nfs-utils-extra", &[], 0),
        host.build("needs-nfs", &["nfs-utils", "nfs-client"], 0),
    ];
    host.install(&lookalikes.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let (status, message) = host.package_check();
    assert_eq!(status, "NonOK", "{message}");
    assert!(
        message.contains("neither nfs-utils nor nfs-client is in the rpm database /var/lib/rpm/rpmdb.sqlite (3 packages)"),
        "{message}"
    );

    // NB: 300 Provides make the header larger than a 4 KiB page: it is read from overflow pages.
    host.install(&[&host.build("nfs-utils", &[], 300)]);
    let (status, message) = host.package_check();
    assert_eq!(status, "OK", "{message}");
    assert_eq!(
        message,
        "nfs-utils is in the rpm database /var/lib/rpm/rpmdb.sqlite"
    );

    host.erase("nfs-utils");
    let (status, message) = host.package_check();
    assert_eq!(status, "NonOK", "{message}");
}

/// Copy the header of `name` from `from`'s database into `to`'s, and leave the change only in
/// `to`'s write-ahead log: the writer exits without the checkpoint a close would make, as when
/// rpm or dnf is killed, or still has the database open.
fn insert_into_wal_only(from: &RpmHost, to: &RpmHost, name: &str) {
    let db = |h: &RpmHost| h.root().join("var/lib/rpm/rpmdb.sqlite");
    let script = "import os, sqlite3, sys\n\
c = sqlite3.connect(sys.argv[1])\n\
c.execute('PRAGMA journal_mode=WAL')\n\
c.execute('ATTACH ? AS other', (sys.argv[2],))\n\
n = c.execute('INSERT INTO Packages(blob) SELECT p.blob FROM other.Packages p JOIN other.Name n ON n.hnum = p.hnum WHERE n.key = ?', (sys.argv[3],)).rowcount\n\
assert n == 1, n\n\
c.commit()\n\
os._exit(0)\n";
    let python = tool("python3");
    run(Command::new(python)
        .args(["-c", script])
        .arg(db(to))
        .arg(db(from))
        .arg(name))
    .expect("insert into the WAL");
    let wal = std::fs::metadata(db(to).with_extension("sqlite-wal")).expect("a WAL is left");
    assert!(wal.len() > 0, "the WAL holds the insert");
}

#[test]
fn a_package_only_in_the_write_ahead_log_is_installed() {
    let installed = RpmHost::new();
    installed.install(&[&installed.build("nfs-utils", &[], 0)]);
    let host = RpmHost::new();
    host.install(&[&host.build("libnfs-utils", &[], 0)]);
    assert_eq!(host.package_check().0, "NonOK");

    insert_into_wal_only(&installed, &host, "nfs-utils");
    let (status, message) = host.package_check();
    assert_eq!(status, "OK", "{message}");
}

#[test]
fn headers_in_a_berkeley_db_file_are_found_by_their_region_tag() {
    let host = RpmHost::new();
    let rpm_dir = host.root().join("var/lib/rpm");
    std::fs::remove_dir_all(&rpm_dir).expect("remove the sqlite database");
    std::fs::create_dir_all(&rpm_dir).expect("mkdir");
    // NB: a package file holds the same header a database stores (after its lead and
    // signature); what lies between headers here is as opaque to the reader as Berkeley DB's
    // page headers.
    let packages = |names: &[&str]| -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        for name in names {
            let file = host.build(name, &["nfs-utils"], 0);
            bytes.extend(std::fs::read(file).expect("read package"));
        }
        bytes
    };
    let db = rpm_dir.join("Packages");
    std::fs::write(&db, packages(&["libnfs-utils", "needs-nfs"])).expect("write db");
    let (status, message) = host.package_check();
    assert_eq!(status, "NonOK", "{message}");
    assert!(message.contains("(2 packages)"), "{message}");

    std::fs::write(&db, packages(&["bash", "nfs-client"])).expect("write db");
    let (status, message) = host.package_check();
    assert_eq!(status, "OK", "{message}");
    assert_eq!(
        message,
        "nfs-client is in the rpm database /var/lib/rpm/Packages"
    );
}
