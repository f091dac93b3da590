//! Property tests of the `/proc` parsers: arbitrary text never panics and a refused limits
//! file names the row at fault; what the kernel writes (`limits`, `status`, `cgroup` under
//! every cgroup driver and runtime) reads back exactly.

use proptest::prelude::*;

use super::*;

/// Rows of `/proc/<pid>/limits`, in the kernel's order.
const ROWS: [(&str, &str); 16] = [
    ("Max cpu time", "seconds"),
    ("Max file size", "bytes"),
    ("Max data size", "bytes"),
    ("Max stack size", "bytes"),
    ("Max core file size", "bytes"),
    ("Max resident set", "bytes"),
    ("Max processes", "processes"),
    ("Max open files", "files"),
    ("Max locked memory", "bytes"),
    ("Max address space", "bytes"),
    ("Max file locks", "locks"),
    ("Max pending signals", "signals"),
    ("Max msgqueue size", "bytes"),
    ("Max nice priority", ""),
    ("Max realtime priority", ""),
    ("Max realtime timeout", "us"),
];

/// `/proc/<pid>/limits` as `proc_pid_limits` prints it.
fn limits_file(limits: &Rlimits, others: &[Limit]) -> String {
    let value = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    let mut out = format!(
        "{:<25} {:<20} {:<20} {:<10}\n",
        "Limit", "Soft Limit", "Hard Limit", "Units"
    );
    for (i, (name, unit)) in ROWS.iter().enumerate() {
        let limit = match *name {
            "Max locked memory" => limits.memlock,
            "Max open files" => limits.nofile,
            "Max processes" => limits.nproc,
            _ => others[i % others.len()],
        };
        out.push_str(&format!(
            "{name:<25} {:<20} {:<20} {unit:<10}\n",
            value(limit.soft),
            value(limit.hard)
        ));
    }
    out
}

fn limit() -> impl Strategy<Value = Limit> {
    (any::<Option<u64>>(), any::<Option<u64>>()).prop_map(|(soft, hard)| Limit { soft, hard })
}

fn uid() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
}

/// A `/proc/<pid>/cgroup` line of a container under one of the drivers and runtimes.
fn container_line(uid: &str, id: &str, layout: usize) -> String {
    let under = uid.replace('-', "_");
    match layout {
        0 => format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{id}.scope"
        ),
        1 => format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/crio-{id}.scope"
        ),
        2 => format!("0::/kubepods.slice/kubepods-pod{under}.slice/docker-{id}.scope"),
        3 => format!("4:pids:/kubepods/burstable/pod{uid}/{id}"),
        _ => format!("11:cpu,cpuacct:/kubepods/pod{uid}/{id}"),
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_a_refusal_names_its_row(text in "(\\PC{0,30}\n?){0,8}") {
        if let Err(e) = parse_limits(&text) {
            prop_assert!(
                ["Max locked memory", "Max open files", "Max processes"].iter().any(|r| e.contains(r)),
                "{}", e
            );
        }
        let _ = parse_cgroup(&text);
        let _ = kb_field(&text, "VmLck");
        let _ = nul_separated(text.as_bytes());
    }

    #[test]
    fn a_limits_file_reads_back(memlock in limit(), nofile in limit(), nproc in limit(), others in prop::collection::vec(limit(), 1..4)) {
        let want = Rlimits { memlock, nofile, nproc };
        prop_assert_eq!(parse_limits(&limits_file(&want, &others)), Ok(want));
    }

    #[test]
    fn a_cut_limits_file_is_refused_or_read_right(memlock in limit(), nofile in limit(), nproc in limit(), cut in any::<prop::sample::Index>()) {
        let want = Rlimits { memlock, nofile, nproc };
        let text = limits_file(&want, &[Limit::default()]);
        let cut = cut.index(text.len());
        // NB: a cut inside a number leaves a smaller number; only whole rows must read right.
        if let (Ok(got), true) = (parse_limits(&text[..cut]), cut > text.find("Max msgqueue").unwrap_or(0)) {
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn status_fields_are_kib_in_bytes(kb in any::<u64>(), junk in "\\PC{0,20}") {
        let text = format!("Name:\tjava\n{junk}\nVmLck:\t{kb} kB\nVmPin:\t0 kB\n");
        prop_assert_eq!(kb_field(&text, "VmLck"), kb.checked_mul(1024));
    }

    #[test]
    fn a_containers_cgroup_names_its_pod_and_container(
        uid in uid(), id in "[0-9a-fA-F]{12,64}", layout in 0usize..5,
        before in prop::collection::vec("[0-9]{1,2}:[a-z,]{0,12}:/(user.slice|system.slice/[a-z.-]{1,20})?", 0..4),
    ) {
        let mut text = before.join("\n");
        text.push('\n');
        text.push_str(&container_line(&uid, &id, layout));
        text.push('\n');
        let want = PodContainer { pod_uid: uid, container_id: id.to_ascii_lowercase() };
        prop_assert_eq!(parse_cgroup(&text), Some(want));
    }

    #[test]
    fn whatever_the_cgroup_says_a_found_pod_is_well_formed(text in "(([0-9]{0,2}:[a-z]{0,4}:)?(/(pod|kubepods-pod|cri-containerd-|crio-conmon-|[0-9a-f_-]){0,12}(\\.slice|\\.scope)?){0,6}\n){0,4}") {
        if let Some(found) = parse_cgroup(&text) {
            prop_assert_eq!(found.pod_uid.len(), 36);
            prop_assert!(found.container_id.len() >= 12);
            prop_assert!(found.container_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
}
